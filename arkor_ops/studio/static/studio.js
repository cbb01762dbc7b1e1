// arkor-ops studio: the page of `arkor-ops studio`. Plain DOM and SVG, no framework and no
// network beyond the studio's own API (its Content-Security-Policy admits nothing else).
// Hash routes: #/ (runs), #/runs/ID (one run), #/playground?job=ID&step=N.
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

// -- the loss chart (plain SVG) ------------------------------------------------------------

const BOX = { width: 720, height: 280, left: 56, right: 16, top: 14, bottom: 34 };

function drawChart(view) {
  const train = [...view.train.entries()].sort((a, b) => a[0] - b[0]);
  const evals = [...view.evals.entries()].sort((a, b) => a[0] - b[0]);
  const all = [...train, ...evals];
  if (!all.length) {
    view.chart.replaceChildren(svg("text", { x: 360, y: 140, class: "placeholder" },
      document.createTextNode("Waiting for training.log events…")));
    return;
  }
  const scale = scales(all);
  const parts = [...grid(scale)];
  if (train.length) parts.push(svg("path", { class: "train", d: pathOf(train, scale) }));
  if (evals.length) {
    parts.push(svg("path", { class: "eval", d: pathOf(evals, scale) }));
    for (const [step, loss] of evals) {
      parts.push(svg("circle", { class: "eval-pt", cx: scale.x(step), cy: scale.y(loss), r: 3.5 }));
    }
  }
  view.chart.dataset.trainPoints = train.length;
  view.chart.dataset.evalPoints = evals.length;
  view.chart.replaceChildren(...parts, hover(view, train, evals, scale));
}

function scales(points) {
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  let [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  let [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 1;
  [y0, y1] = [y0 >= 0 && y0 - pad < 0 ? 0 : y0 - pad, y1 + pad]; // a loss axis stops at 0
  const w = BOX.width - BOX.left - BOX.right;
  const h = BOX.height - BOX.top - BOX.bottom;
  return {
    x0, x1, y0, y1,
    x: (step) => +(BOX.left + ((step - x0) / (x1 - x0)) * w).toFixed(1),
    y: (loss) => +(BOX.top + (1 - (loss - y0) / (y1 - y0)) * h).toFixed(1),
  };
}

function pathOf(points, scale) {
  return points.map(([s, l], i) => `${i ? "L" : "M"}${scale.x(s)},${scale.y(l)}`).join(" ");
}

function grid(scale) {
  const out = [];
  for (let i = 0; i <= 4; i += 1) {
    const loss = scale.y0 + ((scale.y1 - scale.y0) * i) / 4;
    const y = scale.y(loss);
    out.push(svg("line", { class: "grid", x1: BOX.left, x2: BOX.width - BOX.right, y1: y, y2: y }));
    out.push(svg("text", { class: "tick", x: BOX.left - 6, y: y + 4, "text-anchor": "end" },
      document.createTextNode(loss.toFixed(3))));
  }
  const bottom = BOX.height - BOX.bottom;
  const ticks = [...new Set([Math.ceil(scale.x0), Math.round((scale.x0 + scale.x1) / 2), Math.floor(scale.x1)])];
  for (const step of ticks) {
    out.push(svg("text", { class: "tick", x: scale.x(step), y: bottom + 16, "text-anchor": "middle" },
      document.createTextNode(String(step))));
  }
  out.push(svg("text", { class: "axis", x: BOX.width - BOX.right, y: BOX.height - 2, "text-anchor": "end" },
    document.createTextNode("step")));
  return out;
}

function hover(view, train, evals, scale) {
  const mark = svg("line", { class: "cursor", y1: BOX.top, y2: BOX.height - BOX.bottom, visibility: "hidden" });
  const label = svg("text", { class: "hover", y: BOX.top + 12, visibility: "hidden" });
  const area = svg("rect", {
    class: "hit", x: BOX.left, y: BOX.top, width: BOX.width - BOX.left - BOX.right,
    height: BOX.height - BOX.top - BOX.bottom,
  });
  const lookup = new Map(train);
  const evalAt = new Map(evals);
  const steps = [...new Set([...lookup.keys(), ...evalAt.keys()])].sort((a, b) => a - b);
  area.addEventListener("mousemove", (e) => {
    const box = view.chart.getBoundingClientRect();
    const x = ((e.clientX - box.left) / box.width) * BOX.width;
    const step = steps.reduce((best, s) => (Math.abs(scale.x(s) - x) < Math.abs(scale.x(best) - x) ? s : best), steps[0]);
    const parts = [`step ${step}`];
    if (lookup.has(step)) parts.push(`loss ${lookup.get(step).toFixed(4)}`);
    if (evalAt.has(step)) parts.push(`eval ${evalAt.get(step).toFixed(4)}`);
    const cx = scale.x(step);
    for (const [k, v] of [["x1", cx], ["x2", cx]]) mark.setAttribute(k, v);
    label.setAttribute("x", cx > BOX.width / 2 ? cx - 6 : cx + 6);
    label.setAttribute("text-anchor", cx > BOX.width / 2 ? "end" : "start");
    label.textContent = parts.join("  ");
    mark.setAttribute("visibility", "visible");
    label.setAttribute("visibility", "visible");
  });
  area.addEventListener("mouseleave", () => {
    mark.setAttribute("visibility", "hidden");
    label.setAttribute("visibility", "hidden");
  });
  return svg("g", {}, mark, label, area);
}

// -- playground ----------------------------------------------------------------------------

function playgroundPage(params) {
  const pg = {
    runSelect: el("select", { id: "pg-run" }),
    stepSelect: el("select", { id: "pg-step" }),
    maxTokens: el("input", { id: "pg-max-tokens", type: "number", min: 1, max: 8192, value: 48 }),
    messages: el("div", { id: "pg-messages", class: "messages" }),
    input: el("textarea", { id: "pg-input", rows: 3, placeholder: "Ask the checkpoint…" }),
    send: el("button", { id: "pg-send", text: "Send" }),
    note: banner(),
    history: [],
    wanted: { job: params.get("job"), step: params.get("step") },
    pinned: Boolean(params.get("step")), // else the newest checkpoint, as new ones commit
  };
  pg.stepSelect.addEventListener("change", () => { pg.pinned = true; });
  pg.runSelect.addEventListener("change", () => {
    pg.wanted.step = null;
    pg.pinned = false;
    pg.history = [];
    pg.messages.replaceChildren();
    loadSteps(pg);
  });
  pg.send.addEventListener("click", () => sendMessage(pg));
  pg.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendMessage(pg); }
  });
  app.replaceChildren(
    el("section", { class: "card playground" },
      el("div", { class: "toolbar" }, el("h1", { text: "Playground" })),
      el("p", { class: "muted", text: "Chat with a committed checkpoint of a live run: the worker that trains it answers between two steps (infer())." }),
      el("div", { class: "controls" },
        el("label", {}, "Run ", pg.runSelect),
        el("label", {}, "Checkpoint ", pg.stepSelect),
        el("label", {}, "Max tokens ", pg.maxTokens)),
      pg.note, pg.messages,
      el("div", { class: "composer" }, pg.input, pg.send)),
  );
  loadRuns(pg);
  const timer = setInterval(() => loadSteps(pg), 5000); // new checkpoints appear
  leaving.push(() => clearInterval(timer));
}

async function loadRuns(pg) {
  let runs;
  try {
    runs = (await api("/api/runs")).runs;
  } catch (error) {
    pg.note.show(`Cannot list runs: ${error.message}`);
    return;
  }
  runs.sort((a, b) => Number(a.terminal) - Number(b.terminal));
  pg.runSelect.replaceChildren(...runs.map((r) =>
    el("option", { value: r.id, text: `${r.name} · ${r.status} · ${r.id}`, selected: r.id === pg.wanted.job })));
  if (!runs.length) pg.note.show("No runs yet.", "warn");
  await loadSteps(pg);
}

async function loadSteps(pg) {
  const job = pg.runSelect.value;
  if (!job) return;
  let found;
  try {
    found = await api(`/api/runs/${encodeURIComponent(job)}/checkpoints`);
  } catch (error) {
    pg.note.show(error.message);
    return;
  }
  const steps = found.checkpoints.filter((c) => c.kind === "checkpoint").map((c) => c.step).reverse();
  const chosen = pg.pinned ? pg.stepSelect.value || pg.wanted.step : String(steps[0]);
  pg.stepSelect.replaceChildren(...steps.map((s, i) =>
    el("option", { value: s, text: i ? `step ${s}` : `step ${s} (newest)` })));
  if (steps.map(String).includes(String(chosen))) pg.stepSelect.value = String(chosen);
  if (!steps.length) pg.note.show("This run has no committed checkpoint yet.", "warn");
  else if (pg.note.textContent.startsWith("This run has no")) pg.note.show("");
}

function bubble(pg, role, text = "") {
  const body = el("div", { class: "text", text });
  const meta = el("div", { class: "meta" });
  const node = el("div", { class: `msg ${role}`, "data-state": role === "assistant" ? "waiting" : "done" }, body, meta);
  pg.messages.append(node);
  pg.messages.scrollTop = pg.messages.scrollHeight;
  return { node, body, meta };
}

async function sendMessage(pg) {
  const text = pg.input.value.trim();
  const job = pg.runSelect.value;
  const step = pg.stepSelect.value;
  if (!text || !job || !step || pg.send.disabled) return;
  pg.input.value = "";
  pg.send.disabled = true;
  bubble(pg, "user", text);
  const messages = [...pg.history, { role: "user", content: text }];
  const answer = bubble(pg, "assistant");
  answer.meta.textContent = `step ${step} · waiting for the next step boundary…`;
  try {
    const reply = await streamAnswer(job, step, messages, Number(pg.maxTokens.value) || 48, answer);
    pg.history = [...messages, { role: "assistant", content: reply.text }];
    answer.node.dataset.state = "done";
    const pause = reply.usage && reply.usage.training_pause_seconds;
    answer.meta.textContent = [reply.model || `step ${step}`,
      reply.usage ? `${reply.usage.completion_tokens} tokens` : null,
      typeof pause === "number" ? `training paused ${pause.toFixed(2)} s` : null].filter(Boolean).join(" · ");
  } catch (error) {
    answer.node.classList.add("error");
    answer.node.dataset.state = "error";
    answer.body.textContent = error.code ? `${error.code}: ${error.message}` : error.message;
    answer.meta.textContent = `step ${step}`;
  }
  pg.send.disabled = false;
}

async function streamAnswer(job, step, messages, maxTokens, answer) {
  const response = await fetch(
    `/api/runs/${encodeURIComponent(job)}/checkpoints/${encodeURIComponent(step)}/chat`,
    { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, maxTokens }) },
  );
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.code = body.code;
    throw error;
  }
  const reply = { text: "", model: null, usage: null };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (readFrame(frame, reply, answer)) return reply;
    }
  }
  return reply;
}

function readFrame(frame, reply, answer) {
  const event = (frame.match(/^event: ?(.*)$/m) || [])[1];
  const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.replace(/^data: ?/, "")).join("\n");
  if (event === "studio.error") throw new Error(JSON.parse(data).error);
  if (data === "[DONE]") return true;
  if (!data) return false;
  const chunk = JSON.parse(data);
  reply.model = chunk.model || reply.model;
  reply.usage = chunk.usage || reply.usage;
  for (const choice of chunk.choices || []) {
    if (choice.delta && choice.delta.content) reply.text += choice.delta.content;
  }
  answer.body.textContent = reply.text;
  answer.node.dataset.state = "streaming";
  return false;
}

window.addEventListener("hashchange", route);
route();
