// The live run page: follows /ws/runs/<id>/ from the last sequence number it saw (reconnecting
// with back-off, missing nothing), and draws the latest prompt groups, the charts, progress, the
// log and the health checks.
(function () {
  "use strict";
  const page = document.getElementById("run-page");
  if (!page) return;
  const runId = page.dataset.runId;
  const charts = window.Groupwise.charts;
  const state = {
    lastSeq: 0,
    run: null,
    rollouts: new Map(),   // step -> {mean, std, components, groups, rollout_index}
    train: new Map(),      // step -> metrics
    evals: new Map(),      // step -> {reward_mean, components}
    throughput: new Map(), // step -> payload
    logs: [],
    health: null,
    startedAt: null,
  };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };

  function stats(values) {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
    return { mean, std };
  }

  function dropAfter(startStep) {
    for (const s of [...state.rollouts.keys()]) if (s >= startStep) state.rollouts.delete(s);
    for (const m of [state.train, state.evals, state.throughput])
      for (const s of [...m.keys()]) if (s > startStep) m.delete(s);
  }

  function apply(event) {
    const p = event.payload;
    switch (event.type) {
      case "run_started":
        if (p.start_step > 0) dropAfter(p.start_step);
        state.startedAt = p.time;
        break;
      case "rollout_finished": {
        const rewards = p.groups.flatMap((g) => g.samples.map((s) => s.reward));
        const components = {};
        for (const g of p.groups) for (const s of g.samples)
          for (const [k, v] of Object.entries(s.reward_components)) (components[k] ||= []).push(v);
        state.rollouts.set(p.step, { ...stats(rewards), components, groups: p.groups,
          rollout_index: p.rollout_index, time: p.time });
        break;
      }
      case "train_step_finished": state.train.set(p.step, p); break;
      case "evaluation_finished": state.evals.set(p.step, p); break;
      case "throughput": state.throughput.set(p.step, p); break;
      case "health": state.health = p; break;
      case "log_line": state.logs.push(p); break;
      case "run_ended":
        state.logs.push({ level: p.status === "failed" ? "error" : "info", time: p.time,
          message: `run ${p.status} after step ${p.step}` + (p.error ? `: ${p.error}` : "") });
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
    const times = [...state.train.values()].map((t) => t.time);
    let eta = "";
    if (["running", "cancelling"].includes(run.status) && times.length >= 2 && run.max_steps > run.step) {
      const perStep = (times[times.length - 1] - times[0]) / (times.length - 1);
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
    const steps = [...state.rollouts.keys()].sort((a, b) => a - b);
    if (steps.length === 0) return;
    const latest = state.rollouts.get(steps[steps.length - 1]);
    // Rebuild only for a new rollout: recreated images would reload and flicker.
    if (latest === shownRollout) return;
    shownRollout = latest;
    $("groups-title").textContent = `Prompt groups · rollout ${latest.rollout_index} (before step ${steps[steps.length - 1] + 1})`;
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

  function renderCharts() {
    const steps = [...state.rollouts.keys()].sort((a, b) => a - b);
    const series = [{ name: "reward", color: COLORS[0], points: steps.map((s) => {
      const r = state.rollouts.get(s);
      return { x: s, y: r.mean, lo: r.mean - r.std, hi: r.mean + r.std };
    }) }];
    // Each reward's own score; its sub-components (name.part) stay in the lightbox.
    const names = new Set(steps.flatMap((s) => Object.keys(state.rollouts.get(s).components))
      .filter((name) => !name.includes(".")));
    // With one reward its own line would repeat the total: draw components only for several.
    if (names.size > 1) [...names].forEach((name, i) => series.push({ name, color: COLORS[(i + 1) % COLORS.length],
      points: steps.map((s) => ({ x: s, y: stats(state.rollouts.get(s).components[name] || [NaN]).mean })) }));
    const evals = [...state.evals.values()].sort((a, b) => a.step - b.step);
    if (evals.length) series.push({ name: "eval", color: "#111", points: evals.map((e) => ({ x: e.step, y: e.reward_mean })) });
    charts.line($("chart-reward"), { series, yLabel: "reward" });

    const train = [...state.train.values()].sort((a, b) => a.step - b.step);
    const pick = (k) => train.map((t) => ({ x: t.step, y: t[k] }));
    charts.line($("chart-loss"), { yLabel: "loss", series: [
      { name: "loss", color: COLORS[0], points: pick("loss") },
      { name: "KL", color: COLORS[2], points: pick("kl") },
    ] });
    charts.line($("chart-ratio"), { yLabel: "ratio", series: [
      { name: "ratio (min–max)", color: COLORS[4], points: train.map((t) => ({ x: t.step, y: t.ratio_mean, lo: t.ratio_min, hi: t.ratio_max })) },
      { name: "clip fraction", color: COLORS[3], points: pick("clip_fraction") },
    ] });
    const tp = [...state.throughput.values()].sort((a, b) => a.step - b.step);
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
    const steps = [...state.evals.keys()].sort((a, b) => a - b);
    if (steps.length === 0) return;
    const chosen = select.dataset.user ? Number(select.value) : steps[steps.length - 1];
    select.replaceChildren(...steps.map((s) => {
      const option = el("option", "", String(s));
      option.value = s;
      option.selected = s === chosen;
      return option;
    }));
    const evaluation = state.evals.get(chosen);
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
  $("eval-step").addEventListener("change", () => {
    $("eval-step").dataset.user = "1";
    renderEvals();
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
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type !== "events") return;
      for (const event of data.events) {
        if (event.seq <= state.lastSeq) continue;
        apply(event);
        state.lastSeq = event.seq;
      }
      if (data.run) state.run = data.run;
      page.dataset.lastSeq = state.lastSeq;
      render();
    };
    socket.onclose = (event) => {
      if (event.code === 4401 || event.code === 4404) {
        $("live-state").textContent = "not allowed: log in again";
        return;
      }
      $("live-state").textContent = "reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
