// The localgem playground. It uses the server's public API only, as any client does:
// GET /v1beta/models, POST /v1beta/interactions (streamed), GET .../{id}?stream=true with
// last_event_id to resume, POST .../{id}/cancel, and the Files API's resumable upload.

const API = "/v1beta";
const $ = (id) => document.getElementById(id);
const saved = (k, fallback) => { try { return JSON.parse(localStorage.getItem(k)) ?? fallback; } catch { return fallback; } };
const save = (k, v) => localStorage.setItem(k, JSON.stringify(v));

// The conversation: turns as shown, the stored chain's last id, the stateless history.
const state = saved("localgem.chat", { turns: [], lastId: null, history: [] });
let running = null; // { turn, id, lastEventId, abort, started, firstAt }
let attachments = []; // { file, uri, mime, kind, url }
let leaving = false; // the page is being unloaded: a stream cut now is resumed after the reload
addEventListener("pagehide", () => { leaving = true; });
window.playground = { state, requests: [] };

function headers(extra = {}) {
  const h = { ...extra };
  const key = $("key").value.trim();
  if (key) h["x-goog-api-key"] = key;
  return h;
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function apiError(resp) {
  let msg = `${resp.status} ${resp.statusText}`;
  try { const body = await resp.json(); msg = `${resp.status}: ${body.error?.message ?? JSON.stringify(body)}`; } catch { /* not JSON */ }
  const err = new Error(msg);
  err.status = resp.status;
  err.retryAfter = Number(resp.headers.get("retry-after") || 0);
  return err;
}

// ---------------------------------------------------------------- rendering

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderTurn(turn) {
  let node = document.querySelector(`[data-turn="${turn.n}"]`);
  if (!node) {
    node = el("div", "turn");
    node.dataset.turn = turn.n;
    $("log").append(node);
  }
  node.replaceChildren();
  const user = el("div", "user");
  const ub = el("div", "bubble");
  for (const a of turn.attachments || []) {
    if (a.kind === "image" && a.url) {
      const img = el("img");
      img.src = a.url;
      img.alt = a.name;
      img.onerror = () => img.replaceWith(el("span", "doc", `image: ${a.name}`));
      ub.append(img);
    } else if ((a.kind === "audio" || a.kind === "video") && a.url) {
      // Named beside the player: a browser that cannot play the format still shows which
      // file went with the turn.
      const player = el(a.kind);
      player.src = a.url;
      player.controls = true;
      player.preload = "metadata";
      ub.append(player, el("span", "doc", `${a.kind}: ${a.name}`), el("br"));
    }
    else ub.append(el("span", "doc", `${a.kind}: ${a.name}`), el("br"));
  }
  ub.append(document.createTextNode(turn.prompt));
  user.append(ub);
  const model = el("div", "model");
  const mb = el("div", "bubble answer");
  for (const s of turn.steps) {
    if (s.type === "thought") {
      const d = el("details", "thought");
      d.append(el("summary", null, "Thought"), el("div", null, s.text || "(no summary)"));
      mb.append(d);
    } else if (s.type === "text") {
      mb.append(el("span", "text", s.text));
    } else if (s.type === "call") {
      const c = el("div", "call", `${s.name}(${s.arguments ?? ""})`);
      c.dataset.callId = s.id;
      if (turn.status === "requires_action" && turn.n === state.turns.length - 1) {
        const f = el("form");
        const input = el("input");
        input.placeholder = "Result (JSON or text)";
        f.append(input, el("button", null, "Send result"));
        f.onsubmit = (ev) => { ev.preventDefault(); sendResult(s, input.value); };
        c.append(f);
      }
      mb.append(c);
    }
  }
  model.append(mb);
  const stats = el("div", "stats");
  const parts = [];
  if (turn.status) parts.push(`status: ${turn.status}`);
  if (turn.ttft != null) parts.push(`TTFT ${turn.ttft} ms`);
  if (turn.tps != null) parts.push(`${turn.tps} tokens/s`);
  if (turn.usage) parts.push(`in ${turn.usage.total_input_tokens} (cached ${turn.usage.total_cached_tokens}), out ${turn.usage.total_output_tokens}`);
  if (turn.id) parts.push(`id ${turn.id}`);
  stats.textContent = parts.join(" · ");
  if (turn.status) stats.classList.add(`status-${turn.status}`);
  model.append(stats);
  node.dataset.status = turn.status || "";
  node.dataset.id = turn.id || "";
  node.append(user, model);
  $("log").scrollTop = $("log").scrollHeight;
}

function persist() { save("localgem.chat", state); }

// ---------------------------------------------------------------- the request

function settings() {
  const body = { model: $("model").value || "gemini-3-flash-preview" };
  const sys = $("system").value.trim();
  if (sys) body.system_instruction = sys;
  const cfg = {};
  if ($("temperature").value !== "") cfg.temperature = Number($("temperature").value);
  if ($("max-tokens").value !== "") cfg.max_output_tokens = Number($("max-tokens").value);
  if ($("thinking").value) cfg.thinking_level = $("thinking").value;
  if ($("tool-choice").value) cfg.tool_choice = $("tool-choice").value;
  if (Object.keys(cfg).length) body.generation_config = cfg;
  const tools = $("tools").value.trim();
  if (tools) body.tools = JSON.parse(tools);
  const schema = $("schema").value.trim();
  if (schema) body.response_format = { type: "text", mime_type: "application/json", schema: JSON.parse(schema) };
  return body;
}

/** This turn's input steps and content, and the request body around them. */
function buildRequest(input) {
  let body;
  try { body = settings(); } catch (e) { throw new Error(`Settings: not valid JSON (${e.message})`); }
  if ($("stateless").checked) {
    body.input = [...state.history, ...input];
    body.store = false;
  } else {
    body.input = input;
    if (state.lastId) body.previous_interaction_id = state.lastId;
  }
  return body;
}

async function send(input, turn) {
  const body = buildRequest(input);
  window.playground.requests.push(body);
  showCode(body);
  state.turns.push(turn);
  turn.n = state.turns.length - 1;
  turn.input = input;
  renderTurn(turn);
  persist();
  await run(turn, () => fetch(`${API}/interactions`, {
    method: "POST",
    headers: headers({ "content-type": "application/json" }),
    // A stored turn runs in the background: a reload does not stop it, and the page
    // attaches to it again (`last_event_id`).
    body: JSON.stringify({ ...body, stream: true, ...(body.store === false ? {} : { background: true }) }),
  }));
}

/** Stream a turn from `open()` (a fetch), retrying once after a 429's Retry-After. */
async function run(turn, open) {
  const abort = new AbortController();
  running = { turn, abort, started: performance.now(), firstAt: null };
  setBusy(true);
  showError("");
  try {
    let resp = await open(abort.signal);
    if (resp.status === 429) {
      const err = await apiError(resp);
      const wait = Math.max(1, err.retryAfter || 1);
      showError(`${err.message}\nThe server is busy: retrying in ${wait} s.`);
      await new Promise((r) => setTimeout(r, wait * 1000));
      resp = await open(abort.signal);
    }
    if (!resp.ok) throw await apiError(resp);
    showError("");
    await readEvents(resp, turn);
  } catch (e) {
    if (leaving) return;
    if (e.name !== "AbortError") {
      turn.status = turn.status || "failed";
      showError(e.message);
    }
  } finally {
    if (leaving) return;
    running = null;
    setBusy(false);
    save("localgem.running", null);
    renderTurn(turn);
    persist();
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

async function readEvents(resp, turn) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      onEvent(JSON.parse(data), turn);
    }
  }
}

function onEvent(e, turn) {
  if (e.event_id) {
    turn.lastEventId = e.event_id;
    if (turn.id) save("localgem.running", { id: turn.id, lastEventId: e.event_id, n: turn.n });
  }
  const steps = turn.steps;
  const stamp = () => {
    if (running && running.firstAt == null) {
      running.firstAt = performance.now();
      turn.ttft = Math.round(running.firstAt - running.started);
    }
  };
  switch (e.event_type) {
    case "interaction.created":
      turn.id = e.interaction.id;
      turn.status = e.interaction.status;
      if (turn.id) save("localgem.running", { id: turn.id, lastEventId: e.event_id, n: turn.n });
      break;
    case "interaction.status_update":
      turn.status = e.status;
      break;
    case "step.start": {
      const t = e.step.type;
      steps[e.index] = t === "thought" ? { type: "thought", text: "" }
        : t === "function_call" ? { type: "call", id: e.step.id, name: e.step.name, arguments: "" }
        : { type: "text", text: "" };
      break;
    }
    case "step.delta": {
      const s = steps[e.index];
      if (!s) break;
      const d = e.delta;
      if (d.type === "text") { stamp(); s.text += d.text; }
      else if (d.type === "thought_summary") { stamp(); s.text += d.content?.text ?? ""; }
      else if (d.type === "thought_signature") s.signature = d.signature;
      else if (d.type === "arguments_delta") s.arguments += d.arguments;
      break;
    }
    case "interaction.completed": {
      turn.status = e.interaction.status;
      turn.usage = e.interaction.usage;
      if (running?.firstAt != null && turn.usage) {
        const secs = (performance.now() - running.firstAt) / 1000;
        if (secs > 0) turn.tps = Math.round((turn.usage.total_output_tokens / secs) * 10) / 10;
      }
      finish(turn);
      break;
    }
    case "error":
      turn.status = "failed";
      showError(e.error?.message ?? "the answer failed");
      break;
  }
  renderTurn(turn);
  persist();
}

/** A finished turn joins the chain (stored) or the history (stateless). */
function finish(turn) {
  if (turn.id) state.lastId = turn.id;
  state.history.push(...turn.input);
  for (const s of turn.steps) {
    if (!s) continue;
    if (s.type === "thought") state.history.push({ type: "thought", signature: s.signature });
    else if (s.type === "text") state.history.push({ type: "model_output", content: [{ type: "text", text: s.text }] });
    else if (s.type === "call") {
      let args = {};
      try { args = JSON.parse(s.arguments || "{}"); } catch { /* keep {} */ }
      state.history.push({ type: "function_call", id: s.id, name: s.name, arguments: args });
    }
  }
}

async function sendResult(call, text) {
  let result;
  try { result = JSON.parse(text); } catch { result = text; }
  const input = [{ type: "function_result", call_id: call.id, name: call.name, result }];
  await send(input, { prompt: `→ ${call.name}: ${text}`, steps: [], attachments: [] });
}

// ---------------------------------------------------------------- stop and resume

async function stop() {
  const r = running;
  if (!r) return;
  if (r.turn.id) {
    const resp = await fetch(`${API}/interactions/${r.turn.id}/cancel`, { method: "POST", headers: headers() });
    if (resp.ok) r.turn.status = (await resp.json()).status;
  }
  r.abort.abort();
}

async function resume() {
  const r = saved("localgem.running", null);
  const turn = r && state.turns[r.n];
  if (!turn || turn.id !== r.id) return;
  const q = r.lastEventId ? `&last_event_id=${encodeURIComponent(r.lastEventId)}` : "";
  turn.resumed = true;
  await run(turn, (signal) => fetch(`${API}/interactions/${r.id}?stream=true${q}`, { headers: headers(), signal }));
}

// ---------------------------------------------------------------- uploads

async function upload(file) {
  const mime = file.type || "application/octet-stream";
  const start = await fetch("/upload/v1beta/files", {
    method: "POST",
    headers: headers({
      "content-type": "application/json",
      "x-goog-upload-protocol": "resumable",
      "x-goog-upload-command": "start",
      "x-goog-upload-header-content-length": String(file.size),
      "x-goog-upload-header-content-type": mime,
    }),
    body: JSON.stringify({ file: { display_name: file.name } }),
  });
  if (!start.ok) throw await apiError(start);
  const url = start.headers.get("x-goog-upload-url");
  const done = await fetch(url, {
    method: "POST",
    headers: headers({ "x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0" }),
    body: file,
  });
  if (!done.ok) throw await apiError(done);
  const f = (await done.json()).file;
  const kind = ["image", "audio", "video"].find((k) => f.mimeType.startsWith(`${k}/`)) || "document";
  return { name: file.name, uri: f.uri, mime: f.mimeType, kind, url: URL.createObjectURL(file) };
}

function showAttachments() {
  $("attachments").replaceChildren(...attachments.map((a) => el("span", null, `${a.kind}: ${a.name}`)));
}

// ---------------------------------------------------------------- copy as code

let lang = "python";
let lastBody = null;

function pyValue(v, indent = "") {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (Array.isArray(v)) return `[${v.map((x) => pyValue(x, indent)).join(", ")}]`;
  if (typeof v === "object") {
    const inner = Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyValue(x, indent)}`);
    return `{${inner.join(", ")}}`;
  }
  return JSON.stringify(v);
}

function showCode(body) {
  lastBody = body;
  const b = { ...body };
  delete b.stream;
  delete b.background;
  let code;
  if (lang === "python") {
    const args = Object.entries(b).map(([k, v]) => `    ${k}=${pyValue(v)},`).join("\n");
    code = `from google import genai\n\nclient = genai.Client()\n\ninteraction = client.interactions.create(\n${args}\n)\nprint(interaction.steps[-1].content[0].text)\n`;
  } else if (lang === "javascript") {
    code = `import { GoogleGenAI } from "@google/genai";\n\nconst ai = new GoogleGenAI({});\n\nconst interaction = await ai.interactions.create(${JSON.stringify(b, null, 2)});\nconsole.log(interaction.steps.at(-1).content[0].text);\n`;
  } else {
    const json = JSON.stringify(b, null, 2).replaceAll("'", "'\\''");
    code = `curl -X POST "$GOOGLE_GEMINI_BASE_URL/v1beta/interactions" \\\n  -H "x-goog-api-key: $GEMINI_API_KEY" \\\n  -H 'Content-Type: application/json' \\\n  -d '${json}'\n`;
  }
  $("code").textContent = code;
}

// ---------------------------------------------------------------- wiring

async function loadModels() {
  const sel = $("model");
  try {
    const resp = await fetch(`${API}/models`, { headers: headers() });
    if (!resp.ok) throw await apiError(resp);
    const { models } = await resp.json();
    sel.replaceChildren(...models.map((m) => {
      const o = el("option", null, m.displayName || m.name);
      o.value = m.name.replace(/^models\//, "");
      return o;
    }));
    const want = localStorage.getItem("localgem.model");
    if (want && models.some((m) => m.name === `models/${want}`)) sel.value = want;
  } catch (e) {
    showError(`Cannot list models: ${e.message}`);
  }
}

async function submit() {
  const text = $("prompt").value.trim();
  if ((!text && !attachments.length) || running) return;
  const content = attachments.map((a) => ({ type: a.kind, uri: a.uri, mime_type: a.mime }));
  if (text) content.push({ type: "text", text });
  const turn = { prompt: text, steps: [], attachments: attachments.map(({ name, kind, url }) => ({ name, kind, url })) };
  $("prompt").value = "";
  attachments = [];
  showAttachments();
  try {
    await send([{ type: "user_input", content }], turn);
  } catch (e) {
    showError(e.message);
  }
}

const SETTINGS = ["system", "temperature", "max-tokens", "thinking", "stateless", "tools", "tool-choice", "schema"];

function init() {
  $("key").value = localStorage.getItem("localgem.key") || "";
  $("key").onchange = () => { localStorage.setItem("localgem.key", $("key").value); loadModels(); };
  $("model").onchange = () => localStorage.setItem("localgem.model", $("model").value);
  $("composer").onsubmit = (ev) => { ev.preventDefault(); submit(); };
  $("prompt").onkeydown = (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submit(); }
  };
  $("stop").onclick = stop;
  $("new-chat").onclick = () => {
    state.turns = []; state.lastId = null; state.history = [];
    persist();
    $("log").replaceChildren();
    showError("");
  };
  $("toggle-settings").onclick = () => {
    const open = $("settings").classList.toggle("open");
    $("toggle-settings").setAttribute("aria-expanded", String(open));
  };
  $("file").onchange = async () => {
    const f = $("file").files[0];
    $("file").value = "";
    if (!f) return;
    try {
      attachments.push(await upload(f));
      showAttachments();
    } catch (e) {
      showError(`Upload failed: ${e.message}`);
    }
  };
  for (const b of document.querySelectorAll(".tabs [data-lang]")) {
    b.onclick = () => {
      lang = b.dataset.lang;
      document.querySelectorAll(".tabs [data-lang]").forEach((x) => x.classList.toggle("active", x === b));
      if (lastBody) showCode(lastBody);
    };
  }
  $("copy").onclick = () => navigator.clipboard?.writeText($("code").textContent).catch(() => {});
  // Settings survive a reload.
  const kept = saved("localgem.settings", {});
  for (const id of SETTINGS) {
    const input = $(id);
    if (id in kept) input[input.type === "checkbox" ? "checked" : "value"] = kept[id];
    input.addEventListener("change", () => {
      const now = saved("localgem.settings", {});
      now[id] = input.type === "checkbox" ? input.checked : input.value;
      save("localgem.settings", now);
    });
  }
  for (const t of state.turns) renderTurn(t);
  loadModels().then(resume);
}

init();
