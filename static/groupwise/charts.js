// Small SVG charts drawn by our own code: line series with an optional band, and stacked bars.
// Groupwise.charts.line(el, {series: [{name, color, points: [{x, y, lo?, hi?}]}], yLabel, onZoom?})
//   onZoom(x0, x1): called with the x range the user drags across (none: no zoom).
// Groupwise.charts.stacked(el, {keys: [{name, color}], rows: [{x, values: {name: number}}]})
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 520, H = 200, PAD = { l: 48, r: 12, t: 12, b: 26 };

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function extent(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    if (lo === hi) { lo -= pad || 0.5; hi += pad || 0.5; }
    return [lo, hi];
  }

  function ticks(lo, hi, n) {
    const step = (hi - lo) / n;
    return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(1);
    return Number(v.toPrecision(3)).toString();
  }

  function frame(el, xs, ys, yLabel) {
    el.replaceChildren();
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" }, el);
    const [x0, x1] = extent(xs, 1);
    const [y0, y1] = extent(ys);
    const sx = (x) => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
    const sy = (y) => H - PAD.b - ((y - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
    const ix = (px) => x0 + ((px - PAD.l) / (W - PAD.l - PAD.r)) * (x1 - x0);
    for (const t of ticks(y0, y1, 4)) {
      svg("line", { x1: PAD.l, x2: W - PAD.r, y1: sy(t), y2: sy(t), class: "grid" }, root);
      svg("text", { x: PAD.l - 6, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, root).textContent = fmt(t);
    }
    for (const t of ticks(x0, x1, Math.min(5, Math.max(1, x1 - x0)))) {
      svg("text", { x: sx(t), y: H - 8, class: "tick", "text-anchor": "middle" }, root).textContent = Math.round(t);
    }
    if (yLabel) svg("text", { x: 4, y: 12, class: "tick" }, root).textContent = yLabel;
    return { root, sx, sy, ix };
  }

  // Drag across the plot to pick an x range; a click (a drag under 4 px) picks nothing.
  function zoomable(root, ix, onZoom) {
    root.dataset.zoomable = "";
    const band = svg("rect", { y: PAD.t, height: H - PAD.t - PAD.b, class: "zoom-band", hidden: "" }, root);
    const at = (e) => {
      const box = root.getBoundingClientRect();
      return Math.max(PAD.l, Math.min(W - PAD.r, ((e.clientX - box.left) / box.width) * W));
    };
    let start = null;
    root.addEventListener("pointerdown", (e) => {
      start = at(e);
      root.dataset.dragging = "";
      root.setPointerCapture(e.pointerId);
    });
    root.addEventListener("pointermove", (e) => {
      if (start === null) return;
      const now = at(e);
      band.removeAttribute("hidden");
      band.setAttribute("x", Math.min(start, now));
      band.setAttribute("width", Math.abs(now - start));
    });
    root.addEventListener("pointerup", (e) => {
      if (start === null) return;
      const end = at(e);
      band.setAttribute("hidden", "");
      delete root.dataset.dragging;
      const [a, b] = [Math.min(start, end), Math.max(start, end)];
      start = null;
      if (b - a >= 4) onZoom(ix(a), ix(b));
    });
  }

  function line(el, spec) {
    const all = spec.series.flatMap((s) => s.points);
    if (all.length === 0) { el.innerHTML = '<p class="muted">No data yet.</p>'; return; }
    const ys = all.flatMap((p) => [p.y, p.lo ?? p.y, p.hi ?? p.y]).filter(Number.isFinite);
    const { root, sx, sy, ix } = frame(el, all.map((p) => p.x), ys, spec.yLabel);
    if (spec.onZoom) zoomable(root, ix, spec.onZoom);
    const legend = svg("g", {}, root);
    spec.series.forEach((s, i) => {
      const pts = s.points.filter((p) => Number.isFinite(p.y));
      if (pts.some((p) => p.lo !== undefined)) {
        const upper = pts.map((p) => `${sx(p.x)},${sy(p.hi)}`);
        const lower = pts.slice().reverse().map((p) => `${sx(p.x)},${sy(p.lo)}`);
        svg("polygon", { points: upper.concat(lower).join(" "), fill: s.color, opacity: 0.15 }, root);
      }
      svg("polyline", { points: pts.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" "), fill: "none",
        stroke: s.color, "stroke-width": 2 }, root);
      if (pts.length === 1) svg("circle", { cx: sx(pts[0].x), cy: sy(pts[0].y), r: 3, fill: s.color }, root);
      const label = svg("text", { x: PAD.l + 8 + i * 110, y: PAD.t + 10, class: "legend", fill: s.color }, legend);
      label.textContent = s.name;
    });
  }

  function stacked(el, spec) {
    if (spec.rows.length === 0) { el.innerHTML = '<p class="muted">No data yet.</p>'; return; }
    const totals = spec.rows.map((r) => spec.keys.reduce((a, k) => a + (r.values[k.name] || 0), 0));
    const { root, sx, sy } = frame(el, spec.rows.map((r) => r.x), [0, ...totals], spec.yLabel);
    const width = Math.max(2, (W - PAD.l - PAD.r) / Math.max(spec.rows.length, 1) * 0.7);
    for (const row of spec.rows) {
      let base = 0;
      for (const key of spec.keys) {
        const v = row.values[key.name] || 0;
        svg("rect", { x: sx(row.x) - width / 2, y: sy(base + v), width, height: Math.max(0, sy(base) - sy(base + v)),
          fill: key.color }, root).appendChild(document.createElementNS(NS, "title")).textContent =
          `${key.name}: ${fmt(v)} s`;
        base += v;
      }
    }
    spec.keys.forEach((k, i) => {
      svg("text", { x: PAD.l + 8 + i * 100, y: PAD.t + 10, class: "legend", fill: k.color }, root).textContent = k.name;
    });
  }

  window.Groupwise = window.Groupwise || {};
  window.Groupwise.charts = { line, stacked };
})();
