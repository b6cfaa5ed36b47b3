// New run form: as the user types, ask the engine's validator (via the API) for the layout and
// the problems, show them in the side panel and beside their fields.
(function () {
  "use strict";
  const form = document.getElementById("run-form");
  if (!form) return;
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const state = document.getElementById("layout-state");
  const table = document.querySelector("#layout-table tbody");
  const problemsList = document.getElementById("layout-problems");
  const memoryPanel = document.getElementById("memory-panel");
  const memoryTotal = document.getElementById("memory-total");
  const memoryTable = document.querySelector("#memory-table tbody");
  const SHOWN = [
    ["samples_per_rollout", "samples per rollout (P × G)"],
    ["requests_per_rollout", "requests per rollout"],
    ["requests_per_prompt", "requests per prompt (G / M)"],
    ["rows_per_dit_forward", "rows per DiT forward"],
    ["dit_forwards_per_rollout", "DiT forwards per rollout"],
    ["optimizer_steps_per_rollout", "optimizer steps per rollout"],
    ["global_batch_size", "samples per optimizer step"],
    ["tiles_per_rank_per_step", "tiles per rank per step"],
    ["num_rollouts", "rollouts in the run"],
    ["sde_window", "SDE window (rollout 0)"],
  ];

  function overrides() {
    const result = {};
    for (const el of form.elements) {
      if (!el.name || !el.name.includes("__")) continue;
      const path = el.name.replace("__", ".");
      if (el.type === "checkbox") result[path] = el.checked ? "true" : "false";
      else if (el.tagName === "TEXTAREA" && (path === "data.prompts" || path === "data.eval_prompts"))
        result[path] = el.value.split("\n").map((s) => s.trim()).filter(Boolean);
      else result[path] = el.value;
    }
    result.rewards = form.elements.rewards.value;
    return result;
  }

  function fieldBox(path) {
    const name = path.startsWith("rewards") ? "rewards" : path.split("[")[0].replace(".", "__");
    return form.querySelector('[data-field="' + name + '"]');
  }

  function render(answer) {
    for (const box of form.querySelectorAll(".field.live-error")) {
      box.classList.remove("live-error");
      box.querySelector(".live-msg")?.remove();
    }
    problemsList.replaceChildren();
    table.replaceChildren();
    memoryTable.replaceChildren();
    memoryPanel.hidden = true;
    if (answer.valid) {
      state.textContent = "Valid recipe.";
      for (const [key, label] of SHOWN) {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.textContent = label;
        const td = document.createElement("td");
        td.textContent = Array.isArray(answer.layout[key]) ? answer.layout[key].join(", ") : answer.layout[key];
        td.dataset.key = key;
        tr.append(th, td);
        table.append(tr);
      }
      renderMemory(answer.layout.memory);
      return;
    }
    state.textContent = answer.problems.length + " problem(s):";
    for (const problem of answer.problems) {
      const li = document.createElement("li");
      li.textContent = problem.field + ": " + problem.message;
      problemsList.append(li);
      const box = fieldBox(problem.field);
      if (box) {
        box.classList.add("live-error");
        const msg = document.createElement("div");
        msg.className = "live-msg";
        msg.textContent = problem.message;
        box.append(msg);
      }
    }
  }

  // One row per item of the memory plan: its GB and a bar scaled to the GPU's memory.
  function renderMemory(plan) {
    memoryPanel.hidden = false;
    memoryTotal.textContent = plan.total_gb.toFixed(1) + " of " + plan.gpu_memory_gb + " GB (peak while " +
      plan.peak_while + "; " + plan.architecture + ")";
    memoryTotal.classList.toggle("memory-over", !plan.fits);
    for (const item of plan.items) {
      const tr = document.createElement("tr");
      tr.dataset.item = item.name;
      if (!item.counted) tr.className = "other-phase";
      tr.title = item.note;
      const th = document.createElement("th");
      th.textContent = item.name;
      const gb = document.createElement("td");
      gb.className = "gb";
      gb.textContent = item.gb.toFixed(1) + " GB";
      const cell = document.createElement("td");
      const bar = document.createElement("div");
      bar.className = "membar";
      bar.style.width = Math.min(100, (100 * item.gb) / plan.gpu_memory_gb) + "%";
      cell.append(bar);
      tr.append(th, gb, cell);
      memoryTable.append(tr);
    }
  }

  let timer = null;
  let latest = 0;
  async function check() {
    const ticket = ++latest;
    state.textContent = "Checking…";
    try {
      const response = await fetch(form.dataset.validateUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ preset: form.elements.preset.value, overrides: overrides() }),
      });
      const answer = await response.json();
      if (ticket !== latest) return;
      if (response.status === 429) {
        // Over the recipe-check limit: say so, and check again once it allows.
        state.textContent = answer.detail;
        const wait = Number(response.headers.get("Retry-After")) || 5;
        timer = setTimeout(check, wait * 1000);
        return;
      }
      render(answer);
    } catch (error) {
      state.textContent = "Could not check the recipe: " + error;
    }
  }
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  });
  check();
})();
