// arkor-ops studio: the page of `arkor-ops studio`. Plain DOM and SVG, no framework and no
// network beyond the studio's own API (its Content-Security-Policy admits nothing else).
// Hash routes: #/ (runs), #/runs/ID (one run), #/playground?job=ID&step=N (playground.js);
// the chart is chart.js. This file is loaded last: it starts the router.
// Text from runs (names, errors, answers) is always set as textContent, never parsed as HTML.
"use strict";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const STATUSES = ["queued", "running", "completed", "failed", "cancelled"];
const EVENT_TYPES = [
  "job.phase", "training.started", "training.resumed", "training.log", "checkpoint.saved",
  "checkpoint.skipped", "training.completed", "training.failed", "training.cancelled",
  "evaluation.started", "evaluation.progress", "evaluation.completed", "evaluation.failed",
  "evaluation.cancelled",
];
const LOG_LIMIT = 500;
const SVG_NS = "http://www.w3.org/2000/svg";
const app = document.getElementById("app");
let leaving = []; // what the current page must stop (streams, timers) when another one opens

// -- small helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.error) || `HTTP ${response.status}`);
    error.code = body && body.code;
    throw error;
  }
  return body;
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

function num(value, digits = 4) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function age(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)}${unit}`;
  }
  return `${seconds}s`;
}

function when(iso) {
  return iso ? `${new Date(iso).toLocaleString()} (${age(iso)} ago)` : "–";
}

function chip(status) {
  return el("span", { class: `chip ${status}`, text: status });
}

function banner() {
  const node = el("div", { class: "banner", hidden: true });
  node.show = (text, kind = "error") => {
    node.textContent = text;
    node.className = `banner ${kind}`;
    node.hidden = !text;
  };
  return node;
}

function every(ms, fn) {
  fn();
  const timer = setInterval(fn, ms);
  leaving.push(() => clearInterval(timer));
}

function runLink(id, text) {
  return el("a", { href: `#/runs/${encodeURIComponent(id)}`, text: text || id });
}

// -- router --------------------------------------------------------------------------------

function route() {
  for (const stop of leaving) stop();
  leaving = [];
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const page = path.startsWith("/playground") ? "playground" : "runs";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  const run = path.match(/^\/runs\/(.+)$/);
  if (run) return runPage(decodeURIComponent(run[1]));
  if (page === "playground") return playgroundPage(new URLSearchParams(query || ""));
  return runsPage();
}

// -- runs list -----------------------------------------------------------------------------

function runsPage() {
  const search = el("input", { type: "search", id: "search", placeholder: "Search name or id" });
  const filter = el(
    "select",
    { id: "status-filter" },
    el("option", { value: "", text: "All statuses" }),
    ...STATUSES.map((s) => el("option", { value: s, text: s })),
  );
  const rows = el("tbody", { id: "runs" });
  const empty = el("p", { class: "empty", id: "runs-empty" });
  const note = banner();
  let runs = [];
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = runs.filter(
      (r) =>
        (!filter.value || r.status === filter.value) &&
        (!q || r.name.toLowerCase().includes(q) || r.id.toLowerCase().includes(q)),
    );
    rows.replaceChildren(...shown.map(runRow));
    empty.textContent = runs.length === 0
      ? "No runs yet: start one with `arkor-ops start trainer.py`."
      : shown.length === 0 ? "No matches." : "";
  };
  search.addEventListener("input", draw);
  filter.addEventListener("change", draw);
  const head = el("tr", {}, ...["Status", "Name", "Step", "Loss", "Age"].map((h) =>
    el("th", { text: h, class: h === "Step" || h === "Loss" ? "num" : null })));
  app.replaceChildren(
    el("section", { class: "card" },
      el("div", { class: "toolbar" }, el("h1", { text: "Runs" }), search, filter),
      note,
      el("table", { class: "runs" }, el("thead", {}, head), rows),
      empty),
  );
  every(3000, async () => {
    try {
      runs = (await api("/api/runs")).runs;
      note.show("");
    } catch (error) {
      note.show(`Cannot list runs: ${error.message}`);
    }
    draw();
  });
}

function runRow(r) {
  return el("tr", { "data-job": r.id },
    el("td", {}, chip(r.status)),
    el("td", {}, runLink(r.id, r.name), el("div", { class: "muted mono", text: r.id })),
    el("td", { class: "num", text: r.step ?? "–" }),
    el("td", { class: "num", text: num(r.loss) }),
    el("td", { text: age(r.createdAt), title: r.createdAt || "" }));
}

// -- run detail ----------------------------------------------------------------------------

function runPage(jobId) {
  const view = {
    jobId, run: null, train: new Map(), evals: new Map(),
    chart: svg("svg", { id: "chart", viewBox: "0 0 720 280", role: "img" }),
    log: el("ol", { id: "event-log", class: "log" }),
    checkpoints: el("tbody", { id: "checkpoints" }),
    checkpointsNote: el("p", { class: "empty" }),
    side: el("dl", { id: "run-status" }),
    cancel: el("button", { id: "cancel", class: "danger", text: "Cancel run", disabled: true }),
    note: banner(),
    title: el("h1", { text: jobId }),
  };
  view.cancel.addEventListener("click", () => cancelRun(view));
  const ckHead = el("tr", {}, ...["Step", "Kind", "Loss", "Eval loss", "URI", ""].map((h) =>
    el("th", { text: h })));
  app.replaceChildren(
    el("div", { class: "detail" },
      el("div", { class: "main" },
        el("section", { class: "card" },
          el("div", { class: "toolbar" }, view.title, el("a", { href: "#/", text: "← all runs" })),
          view.note,
          el("h2", { text: "Loss" }), view.chart,
          el("div", { class: "legend" },
            el("span", { class: "key train", text: "train loss" }),
            el("span", { class: "key eval", text: "eval loss" }))),
        el("section", { class: "card" }, el("h2", { text: "Checkpoints" }),
          el("table", {}, el("thead", {}, ckHead), view.checkpoints), view.checkpointsNote),
        el("section", { class: "card" }, el("h2", { text: "Events" }), view.log)),
      el("aside", { class: "card side" }, el("h2", { text: "Run" }), view.side, view.cancel)),
  );
  drawChart(view);
  subscribe(view);
  every(3000, () => refreshRun(view));
  refreshCheckpoints(view);
}

async function refreshRun(view) {
  try {
    view.run = await api(`/api/runs/${encodeURIComponent(view.jobId)}`);
  } catch (error) {
    view.note.show(error.message);
    return;
  }
  const r = view.run;
  view.title.textContent = r.name;
  const steps = r.maxSteps ? `${r.step ?? 0} / ${r.maxSteps}` : r.step ?? "–";
  const fields = [
    ["Status", chip(r.status)], ["Phase", r.phase], ["Message", r.message], ["Step", steps],
    ["Loss", num(latestLoss(view) ?? r.loss)], ["Model", r.model], ["Dataset", r.dataset],
    ["Created", when(r.createdAt)], ["Started", when(r.startedAt)],
    ["Completed", r.completedAt ? when(r.completedAt) : null], ["Error", r.error],
    ["Job ID", el("code", { text: r.id })],
  ];
  view.side.replaceChildren(...fields.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k }, v)]));
  if (!view.cancelling) view.cancel.disabled = r.terminal;
  view.cancel.textContent = r.terminal ? `Run ${r.status}` : view.cancelling ? "Cancelling…" : "Cancel run";
}

function showProgress(view, step) {
  // the sidebar follows the stream between two polls of the run
  const stepField = view.side.querySelector('[data-field="Step"]');
  const max = view.run && view.run.maxSteps;
  if (stepField) stepField.textContent = max ? `${step} / ${max}` : String(step);
  const lossField = view.side.querySelector('[data-field="Loss"]');
  if (lossField) lossField.textContent = num(latestLoss(view));
}

function latestLoss(view) {
  const steps = [...view.train.keys()];
  return steps.length ? view.train.get(Math.max(...steps)) : null;
}

async function cancelRun(view) {
  view.cancelling = true;
  view.cancel.disabled = true;
  view.cancel.textContent = "Cancelling…";
  try {
    await post(`/api/runs/${encodeURIComponent(view.jobId)}/cancel`);
  } catch (error) {
    view.note.show(`Cancel failed: ${error.message}`);
  }
  view.cancelling = false;
  await refreshRun(view);
  refreshCheckpoints(view);
}

async function refreshCheckpoints(view) {
  let found;
  try {
    found = await api(`/api/runs/${encodeURIComponent(view.jobId)}/checkpoints`);
  } catch (error) {
    view.checkpointsNote.textContent = error.message;
    return;
  }
  const live = view.run ? !view.run.terminal : true;
  view.checkpoints.replaceChildren(...found.checkpoints.slice().reverse().map((c) =>
    el("tr", { "data-step": c.step },
      el("td", { class: "num", text: c.step }),
      el("td", { text: c.best ? `${c.kind} (best)` : c.kind }),
      el("td", { class: "num", text: num(c.trainLoss) }),
      el("td", { class: "num", text: num(c.evalLoss) }),
      el("td", { class: "uri" }, el("a", { href: c.uri, text: c.uri, target: "_blank" })),
      el("td", {}, live && c.kind === "checkpoint"
        ? el("a", { href: `#/playground?job=${encodeURIComponent(c.jobId)}&step=${c.step}`, text: "Chat" })
        : null))));
  view.checkpointsNote.textContent = found.note
    || (found.checkpoints.length ? "" : "No committed checkpoint yet.");
}

function subscribe(view) {
  const stream = new EventSource(`/api/runs/${encodeURIComponent(view.jobId)}/events`);
  leaving.push(() => stream.close());
  let pending = null; // checkpoint list refreshes, at most one a second
  const later = () => {
    pending = pending || setTimeout(() => { pending = null; refreshCheckpoints(view); }, 1000);
  };
  for (const type of EVENT_TYPES) {
    stream.addEventListener(type, (message) => {
      let data = {};
      try { data = JSON.parse(message.data); } catch (_) { return; }
      onEvent(view, type, data);
      if (type === "checkpoint.saved" || type.endsWith(".completed") || type.endsWith(".cancelled")) later();
      if (TERMINAL.has(type.split(".")[1])) refreshRun(view);
    });
  }
  stream.addEventListener("end", () => { stream.close(); addLog(view, "", "end of stream"); });
  stream.addEventListener("studio.error", (message) => {
    stream.close();
    view.note.show(`Event stream: ${JSON.parse(message.data).error}`);
  });
  stream.addEventListener("open", () => view.note.show(""));
  stream.addEventListener("error", () => {
    if (stream.readyState !== EventSource.CLOSED) view.note.show("Event stream interrupted: reconnecting…", "warn");
  });
}

function onEvent(view, type, data) {
  if (type === "training.log") {
    if (typeof data.loss === "number") view.train.set(data.step, data.loss);
    if (typeof data.evalLoss === "number") view.evals.set(data.step, data.evalLoss);
    drawChart(view);
    showProgress(view, data.step);
  }
  addLog(view, data.timestamp, describeEvent(type, data), type);
}

function describeEvent(type, d) {
  switch (type) {
    case "training.log": {
      const parts = [`step ${d.step}`];
      if (typeof d.loss === "number") parts.push(`loss ${d.loss.toFixed(4)}`);
      if (typeof d.evalLoss === "number") parts.push(`evalLoss ${d.evalLoss.toFixed(4)}`);
      if (typeof d.learningRate === "number") parts.push(`lr ${d.learningRate.toExponential(2)}`);
      return parts.join("  ");
    }
    case "job.phase": return `[${d.phase}] ${d.message || ""}${d.hint ? ` (hint: ${d.hint})` : ""}`;
    case "checkpoint.saved": return `checkpoint at step ${d.step}`;
    case "checkpoint.skipped": return `checkpoint at step ${d.step} skipped: ${d.reason}`;
    case "training.resumed": return `resumed from step ${d.step} (attempt ${d.attempt})`;
    case "training.failed": return `FAILED at step ${d.step ?? "–"}: ${d.error}`;
    case "training.cancelled": return `cancelled at step ${d.step ?? "–"}`;
    case "training.completed": return `completed: ${(d.artifacts || []).length} artifact(s)`;
    default: return type;
  }
}

function addLog(view, timestamp, text, type = "") {
  const stamp = timestamp ? String(timestamp).slice(11, 19) : "";
  view.log.append(el("li", { class: type.replace(".", "-") },
    el("time", { text: stamp }), el("span", { text })));
  while (view.log.childElementCount > LOG_LIMIT) view.log.firstElementChild.remove();
  view.log.scrollTop = view.log.scrollHeight;
}

window.addEventListener("hashchange", route);
route();
