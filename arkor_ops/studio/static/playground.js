// arkor-ops studio: the playground, a chat with one committed checkpoint of a live run through
// the studio's chat route (the backend's infer()), the answer streamed as OpenAI chunks. A
// refusal (run_ended, checkpoint_not_held) is shown as a message. Uses el(), api() from studio.js.
"use strict";

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

