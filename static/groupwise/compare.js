// Compare page: every run's reward curve on one chart.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("compare-curves").textContent);
  const colors = ["#3451b2", "#1f8a4c", "#b7791f", "#c53030", "#805ad5", "#2c7a7b", "#d53f8c", "#4a5568"];
  window.Groupwise.charts.line(document.getElementById("compare-chart"), {
    yLabel: "reward",
    series: data.map((run, i) => ({
      name: run.name,
      color: colors[i % colors.length],
      points: run.reward.map((p) => ({ x: p.step, y: p.mean })),
    })),
  });
})();
