// Status panel: follows /ws/status/ (reconnecting with back-off) and pings a worker on demand.
(function () {
  "use strict";
  const panel = document.getElementById("status-panel");
  if (!panel) return;
  const stateEl = document.getElementById("socket-state");
  const csrf = panel.querySelector("input[name=csrfmiddlewaretoken]").value;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function badge(status) {
    return el("span", "badge badge-" + status, status);
  }

  function render(report) {
    const overall = document.getElementById("status-overall");
    overall.className = "badge badge-" + report.status;
    overall.textContent = report.status;
    const rows = document.getElementById("status-rows");
    rows.replaceChildren();
    for (const [name, check] of Object.entries(report.checks)) {
      const tr = el("tr");
      tr.dataset.check = name;
      tr.append(el("th", "", name));
      const cell = el("td");
      cell.append(badge(check.status));
      tr.append(cell, el("td", "message", check.message));
      rows.append(tr);
    }
    const list = document.getElementById("worker-list");
    list.replaceChildren();
    const workers = (report.checks.workers.details || {}).workers || [];
    if (workers.length === 0) list.append(el("li", "muted", "No live worker."));
    for (const w of workers) {
      const li = el("li");
      li.append(el("code", "", w.name));
      li.append(document.createTextNode(
        " pid " + w.pid + " on " + w.host + " · queues " + w.queues.join(", ")));
      list.append(li);
    }
  }

  let delay = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + panel.dataset.socket);
    socket.onopen = function () {
      delay = 500;
      stateEl.textContent = "live updates: on";
    };
    socket.onmessage = function (message) {
      const data = JSON.parse(message.data);
      if (data.type === "status") render(data.report);
    };
    socket.onclose = function (event) {
      if (event.code === 4401) {
        stateEl.textContent = "live updates: log in again";
        return;
      }
      stateEl.textContent = "live updates: reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();

  document.getElementById("ping-button").addEventListener("click", async function () {
    const out = document.getElementById("ping-result");
    out.textContent = "waiting for a worker…";
    try {
      const response = await fetch(panel.dataset.pingUrl, {
        method: "POST",
        headers: { "X-CSRFToken": csrf },
        credentials: "same-origin",
      });
      const body = await response.json();
      out.textContent = body.ok
        ? "pong from pid " + body.worker.pid + " on " + body.worker.host + " in " + body.round_trip_ms + " ms"
        : body.error;
    } catch (error) {
      out.textContent = "request failed: " + error;
    }
  });
})();
