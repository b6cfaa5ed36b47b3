// The live run page. It opens from the run's current state (/api/runs/<id>/state/: status, the
// latest rollout's prompt groups, evaluation, health, the last log lines) and its metric series
// (/api/runs/<id>/metrics/?points=N, downsampled on the server for a long run), then follows
// /ws/runs/<id>/ from the state's last sequence number (reconnecting with back-off, missing
// nothing). It never replays the run's history, and what it keeps is bounded however long the
// run: the shown rollout and evaluation, the last log lines, and series of at most about
// 2 x POINTS points (past that it asks the server for them downsampled again).
(function () {
  "use strict";
  const page = document.getElementById("run-page");
  if (!page) return;
  const runId = page.dataset.runId;
  const charts = window.Groupwise.charts;
  // About the charts' plot width in pixels (webapp.runs.metrics.CHART_POINTS).
  const POINTS = 500;
  const LOG_LINES = 50;
  const state = {
    lastSeq: 0,
    run: null,
    rollout: null,         // the latest rollout's payload (its prompt groups)
    evaluation: null,      // the shown evaluation's payload
    evaluationSteps: [],
    series: { reward: [], train: [], evaluation: [], throughput: [] },
    zoom: null,            // {from, to}: the charts show these steps at full resolution
    logs: [],
    health: null,
  };
  // Bumped on every change to state.series; the charts last drawn this version.
  let seriesVersion = 0, drawnVersion = -1;
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  function metricsUrl() {
    let url = `${page.dataset.metricsUrl}?points=${POINTS}`;
    if (state.zoom) url += `&from=${state.zoom.from}&to=${state.zoom.to}`;
    return url;
  }

  async function loadSeries() {
    const metrics = await getJSON(metricsUrl());
    for (const name of Object.keys(state.series)) state.series[name] = metrics[name];
    seriesVersion++;
    render();
  }

  // The state and the series, then the socket from the state's last seq. Called again when a
  // resume supersedes what the page shows.
  async function load() {
    const [current, metrics] = await Promise.all([getJSON(page.dataset.stateUrl), getJSON(metricsUrl())]);
    state.run = current.run;
    state.rollout = current.rollout;
    state.evaluation = current.evaluation;
    state.evaluationSteps = current.evaluations;
    state.health = current.health;
    state.logs = current.logs.map(logLine);
    for (const name of Object.keys(state.series)) state.series[name] = metrics[name];
    seriesVersion++;
    state.lastSeq = Math.max(state.lastSeq, current.last_seq);
    page.dataset.lastSeq = state.lastSeq;
    render();
  }

  function logLine(event) {
    const p = event.payload;
    if (event.type === "run_ended")
      return { level: p.status === "failed" ? "error" : "info", time: p.time,
        message: `run ${p.status} after step ${p.step}` + (p.error ? `: ${p.error}` : "") };
    return p;
  }

  function stats(values) {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
    return { mean, std };
  }

  // The chart point of a rollout, as the server makes it (webapp.runs.metrics.chart_point).
  function rewardPoint(p) {
    const samples = p.groups.flatMap((g) => g.samples);
    const values = {};
    for (const s of samples) for (const [k, v] of Object.entries(s.reward_components)) (values[k] ||= []).push(v);
    const components = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, stats(v).mean]));
    return { step: p.step, time: p.time, count: samples.length, components, ...stats(samples.map((s) => s.reward)) };
  }

  // A live point joins its series (replacing one of the same step) unless the charts are zoomed
  // on a fixed range; a series grown past twice POINTS is fetched downsampled again.
  function addPoint(name, point) {
    if (state.zoom) return;
    const series = state.series[name];
    if (series.length && series[series.length - 1].step === point.step) series.pop();
    series.push(point);
    seriesVersion++;
    if (series.length > 2 * POINTS) loadSeries();
  }

  // Set by a resume's run_started: the page opens again from the server after this message.
  let reload = false;
  function apply(event) {
    const p = event.payload;
    switch (event.type) {
      case "run_started":
        // A resume supersedes the steps after its checkpoint: open again from the server.
        if (p.start_step > 0) reload = true;
        break;
      case "rollout_finished":
        state.rollout = p;
        addPoint("reward", rewardPoint(p));
        break;
      case "train_step_finished": {
        const point = { time: p.time };
        for (const key of page.dataset.trainKeys.split(" ")) point[key] = p[key];
        addPoint("train", point);
        break;
      }
      case "evaluation_finished":
        if (!state.evaluationSteps.includes(p.step)) state.evaluationSteps.push(p.step);
        if (!$("eval-step").dataset.user) state.evaluation = p;
        addPoint("evaluation", { step: p.step, time: p.time, reward_mean: p.reward_mean, components: p.reward_components });
        break;
      case "throughput": {
        const { type, schema_version, ...point } = p;
        addPoint("throughput", point);
        break;
      }
      case "health": state.health = p; break;
      case "log_line":
      case "run_ended":
        state.logs.push(logLine(event));
        if (state.logs.length > LOG_LINES) state.logs.splice(0, state.logs.length - LOG_LINES);
        break;
    }
  }

  function renderStatus() {
    const run = state.run;
    if (!run) return;
    const badge = $("run-status");
    badge.textContent = run.status;
    badge.className = "badge status-" + run.status;
    $("run-step").textContent = run.step;
    const fraction = run.max_steps ? run.step / run.max_steps : 0;
    $("run-progress").style.width = Math.min(100, fraction * 100).toFixed(1) + "%";
    const train = state.series.train;
    let eta = "";
    if (["running", "cancelling"].includes(run.status) && train.length >= 2 && run.max_steps > run.step) {
      const first = train[0], last = train[train.length - 1];
      const perStep = (last.time - first.time) / Math.max(1, last.step - first.step);
      const seconds = perStep * (run.max_steps - run.step);
      eta = "ETA " + (seconds > 90 ? Math.round(seconds / 60) + " min" : Math.round(seconds) + " s");
    }
    $("run-eta").textContent = eta;
    $("run-error").textContent = run.error || "";
    for (const button of page.querySelectorAll("[data-when]")) {
      button.hidden = !button.dataset.when.split(" ").includes(run.status);
    }
  }

  let shownRollout = null;
  function renderGroups() {
    const box = $("groups");
    const latest = state.rollout;
    if (!latest) return;
    // Rebuild only for a new rollout: recreated images would reload and flicker.
    if (latest === shownRollout) return;
    shownRollout = latest;
    $("groups-title").textContent = `Prompt groups · rollout ${latest.rollout_index} (before step ${latest.step + 1})`;
    box.replaceChildren();
    for (const group of latest.groups) {
      const row = el("div", "group-row");
      const rewards = group.samples.map((s) => s.reward);
      const flat = Math.max(...rewards) === Math.min(...rewards);
      const prompt = el("div", "group-prompt", group.prompt);
      if (flat) prompt.append(el("span", "badge badge-warn zero-std", "zero std"));
      row.append(prompt);
      const samples = el("div", "group-samples");
      const sorted = group.samples.slice().sort((a, b) => b.reward - a.reward);
      sorted.forEach((s, i) => {
        const figure = el("figure", "sample");
        const img = el("img");
        img.src = s.thumbnail;
        img.alt = `seed ${s.seed}`;
        img.width = 72;
        img.height = 72;
        img.loading = "lazy";
        img.style.outlineColor = advantageColor(s.advantage);
        img.addEventListener("click", () => openLightbox(group, sorted, i));
        figure.append(img, el("figcaption", "", `r ${s.reward.toFixed(3)} · A ${s.advantage.toFixed(2)}`));
        samples.append(figure);
      });
      row.append(samples);
      box.append(row);
    }
  }

  function advantageColor(a) {
    const t = Math.max(-1, Math.min(1, a / 2));
    return t >= 0 ? `rgba(31,138,76,${0.3 + 0.7 * t})` : `rgba(197,48,48,${0.3 - 0.7 * t})`;
  }

  function openLightbox(group, samples, index) {
    const box = $("lightbox");
    const show = (i) => {
      index = (i + samples.length) % samples.length;
      const s = samples[index];
      $("lightbox-image").src = s.image;
      const comps = Object.entries(s.reward_components).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
      $("lightbox-caption").textContent =
        `${group.prompt} · seed ${s.seed} · reward ${s.reward.toFixed(4)} (${comps}) · advantage ${s.advantage.toFixed(3)} · ${index + 1}/${samples.length}`;
    };
    box.hidden = false;
    show(index);
    box.onkeydown = (e) => {
      if (e.key === "Escape") box.hidden = true;
      if (e.key === "ArrowRight") show(index + 1);
      if (e.key === "ArrowLeft") show(index - 1);
    };
    box.onclick = (e) => { if (e.target === box) box.hidden = true; };
    box.focus();
  }

  const COLORS = ["#3451b2", "#1f8a4c", "#b7791f", "#c53030", "#805ad5", "#2c7a7b"];

  // Every chart zooms together: dragging across one shows those steps at full resolution.
  function zoomTo(from, to) {
    state.zoom = { from: Math.floor(from), to: Math.ceil(to) };
    $("zoom-reset").hidden = false;
    loadSeries();
  }
  $("zoom-reset").addEventListener("click", () => {
    state.zoom = null;
    $("zoom-reset").hidden = true;
    loadSeries();
  });

  // Charts are redrawn only when a series changed, and never under a drag (it would lose it).
  function renderCharts() {
    if (drawnVersion === seriesVersion || document.querySelector("svg.chart[data-dragging]")) return;
    drawnVersion = seriesVersion;
    const rewards = state.series.reward.filter((r) => r.mean !== null);
    const series = [{ name: "reward", color: COLORS[0], points: rewards.map((r) =>
      ({ x: r.step, y: r.mean, lo: r.mean - r.std, hi: r.mean + r.std })) }];
    // Each reward's own score; its sub-components (name.part) stay in the lightbox.
    const names = new Set(rewards.flatMap((r) => Object.keys(r.components)).filter((name) => !name.includes(".")));
    // With one reward its own line would repeat the total: draw components only for several.
    if (names.size > 1) [...names].forEach((name, i) => series.push({ name, color: COLORS[(i + 1) % COLORS.length],
      points: rewards.map((r) => ({ x: r.step, y: r.components[name] ?? NaN })) }));
    const evals = state.series.evaluation;
    if (evals.length) series.push({ name: "eval", color: "#111", points: evals.map((e) => ({ x: e.step, y: e.reward_mean })) });
    const box = $("chart-reward");
    charts.line(box, { series, yLabel: "reward", onZoom: zoomTo });
    // What the chart stands for: its points, and the rollouts they merge (a downsampled point
    // stands for `span` of them).
    box.dataset.points = rewards.length;
    box.dataset.rollouts = rewards.reduce((n, r) => n + (r.span || 1), 0);
    box.dataset.firstStep = rewards.length ? (rewards[0].first_step ?? rewards[0].step) : "";
    box.dataset.lastStep = rewards.length ? rewards[rewards.length - 1].step : "";

    const train = state.series.train;
    const pick = (k) => train.map((t) => ({ x: t.step, y: t[k] }));
    charts.line($("chart-loss"), { yLabel: "loss", onZoom: zoomTo, series: [
      { name: "loss", color: COLORS[0], points: pick("loss") },
      { name: "KL", color: COLORS[2], points: pick("kl") },
    ] });
    charts.line($("chart-ratio"), { yLabel: "ratio", onZoom: zoomTo, series: [
      { name: "ratio (min–max)", color: COLORS[4], points: train.map((t) => ({ x: t.step, y: t.ratio_mean, lo: t.ratio_min, hi: t.ratio_max })) },
      { name: "clip fraction", color: COLORS[3], points: pick("clip_fraction") },
    ] });
    const tp = state.series.throughput;
    charts.stacked($("chart-phases"), { yLabel: "seconds", keys: [
      { name: "rollout", color: COLORS[0] }, { name: "reward", color: COLORS[2] },
      { name: "train", color: COLORS[1] }, { name: "weight sync", color: COLORS[4] },
      { name: "server memory", color: COLORS[5] },
    ], rows: tp.map((t) => ({ x: t.step, values: { rollout: t.rollout_seconds, reward: t.reward_seconds,
      train: t.train_seconds, "weight sync": t.weight_sync_seconds,
      "server memory": t.memory_seconds || 0 } })) });
    $("images-per-second").textContent = tp.length ? tp[tp.length - 1].images_per_second.toFixed(1) + " images/s" : "";
  }

  let evalShown = null;
  function renderEvals() {
    const select = $("eval-step");
    const steps = state.evaluationSteps;
    if (steps.length === 0 || !state.evaluation) return;
    const chosen = state.evaluation.step;
    if (select.options.length !== steps.length || Number(select.value) !== chosen)
      select.replaceChildren(...steps.map((s) => {
        const option = el("option", "", String(s));
        option.value = s;
        option.selected = s === chosen;
        return option;
      }));
    const evaluation = state.evaluation;
    if (evaluation === evalShown) return;
    evalShown = evaluation;
    const strip = $("eval-strip");
    strip.replaceChildren();
    for (const s of evaluation.samples) {
      const figure = el("figure", "sample");
      const img = el("img");
      img.src = s.thumbnail;
      img.alt = `${s.prompt} seed ${s.seed}`;
      img.width = 72;
      img.height = 72;
      img.loading = "lazy";
      img.title = s.prompt;
      figure.append(img, el("figcaption", "", `${s.prompt.slice(0, 18)} · r ${s.reward.toFixed(3)}`));
      strip.append(figure);
    }
  }
  // Another evaluation is fetched when chosen: the page keeps only the one it shows.
  $("eval-step").addEventListener("change", async () => {
    const select = $("eval-step");
    select.dataset.user = "1";
    const found = await getJSON(`${page.dataset.eventsUrl}?type=evaluation_finished&step=${Number(select.value)}`);
    if (found.results.length) state.evaluation = found.results[found.results.length - 1].payload;
    render();
  });

  function renderLog() {
    const list = $("log");
    list.replaceChildren();
    for (const line of state.logs.slice(-50).reverse()) {
      const time = new Date(line.time * 1000).toLocaleTimeString();
      list.append(el("li", "log-" + line.level, `${time} ${line.level} ${line.message}`));
    }
    const health = $("health");
    if (state.health) {
      health.replaceChildren();
      for (const c of state.health.checks) {
        const li = el("li");
        li.append(el("span", "badge badge-" + ({ pass: "ok", warn: "warn", fail: "error" }[c.status]), c.status),
          document.createTextNode(` ${c.name}: ${c.message}`));
        health.append(li);
      }
    }
  }

  let pending = false;
  function render() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      renderStatus();
      renderGroups();
      renderCharts();
      renderEvals();
      renderLog();
    });
  }

  let delay = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(`${scheme}${location.host}/ws/runs/${runId}/`);
    socket.onopen = () => {
      delay = 500;
      $("live-state").textContent = "live";
      socket.send(JSON.stringify({ type: "subscribe", after: state.lastSeq }));
    };
    socket.onmessage = async (message) => {
      const data = JSON.parse(message.data);
      if (data.type !== "events") return;
      for (const event of data.events) {
        if (event.seq <= state.lastSeq) continue;
        apply(event);
        state.lastSeq = event.seq;
      }
      if (data.run) state.run = data.run;
      page.dataset.lastSeq = state.lastSeq;
      if (reload) {
        reload = false;
        await load();
      }
      render();
    };
    socket.onclose = (event) => {
      // The server accepts, then closes with these codes (not a failed handshake): stop.
      if (event.code === 4401 || event.code === 4404) {
        $("live-state").textContent =
          event.code === 4401 ? "not allowed: log in again" : "no such run among yours";
        return;
      }
      $("live-state").textContent = "reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  // Open from the server's state, waiting out a server that is restarting, then follow.
  async function open() {
    for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
      try {
        await load();
        break;
      } catch (error) {
        $("live-state").textContent = `could not load the run (${error.message}); retrying…`;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    connect();
  }
  open();
})();
