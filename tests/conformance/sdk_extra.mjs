// Extra @google/genai (JavaScript) checks against a live localgem, beyond the seeds.
//
// run.sh copies this file into the work dir (which has a node_modules symlink
// to the npm project; ESM ignores NODE_PATH) and runs `node sdk_extra.mjs`.
// Needs GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY.  Prints
// "PASS extra/js/<name>" or "FAIL extra/js/<name>: reason" per check; exits 1
// if any failed.  CONFORMANCE_ONLY (regex) selects checks by name.
//
// Retries: the Interactions client of @google/genai 3.x has its own retry loop
// (4 retries on 408/409/429/5xx) that httpOptions.retryOptions does not reach;
// the per-request option { maxRetries: 0 } turns it off, so every call below
// passes R.
import { GoogleGenAI } from "@google/genai";

const MODEL = process.env.CONFORMANCE_MODEL || "gemini-3-flash-preview";
const TIMEOUT_MS = Math.round(Number(process.env.CONFORMANCE_TIMEOUT || 120) * 1000);
const ONLY = process.env.CONFORMANCE_ONLY ? new RegExp(process.env.CONFORMANCE_ONLY) : null;
const R = { maxRetries: 0, timeout: TIMEOUT_MS };

const makeClient = (apiKey) =>
  new GoogleGenAI({ apiKey: apiKey || process.env.GEMINI_API_KEY, httpOptions: { timeout: TIMEOUT_MS } });
const ai = makeClient();

class Fail extends Error {}

async function expectStatus(fn, status, clsName, what) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (!err) throw new Fail(`${what}: expected ${clsName} (${status}), but the call succeeded`);
  const got = err.status ?? err.statusCode;
  if (err.constructor?.name !== clsName || got !== status) {
    throw new Fail(`${what}: expected ${clsName} (${status}), got ${err.constructor?.name} (status ${got}): ${String(err.message).slice(0, 200)}`);
  }
  return err;
}

function modelText(steps) {
  let out = "";
  for (const s of steps || []) {
    if (s.type !== "model_output") continue;
    for (const c of s.content || []) if (c.type === "text") out += c.text || "";
  }
  return out;
}

function answer(it) {
  const t = it?.steps?.at(-1)?.content?.[0]?.text;
  if (typeof t !== "string" || !t.trim()) throw new Fail(`empty or missing steps.at(-1).content[0].text (${JSON.stringify(t)})`);
  return t;
}

const checks = [
  ["stream_matches_get", async () => {
    const stream = await ai.interactions.create({ model: MODEL, input: "Say hello in five words.", stream: true }, R);
    let text = "", id = null, finalStatus = null;
    const seen = [];
    for await (const ev of stream) {
      seen.push(ev.event_type);
      if (ev.event_type === "interaction.created" || ev.event_type === "interaction.completed") {
        id = ev.interaction.id;
        if (ev.event_type === "interaction.completed") finalStatus = ev.interaction.status;
      } else if (ev.event_type === "step.delta" && ev.delta?.type === "text") {
        text += ev.delta.text || "";
      } else if (ev.event_type === "error") {
        throw new Fail(`error event in stream: ${JSON.stringify(ev)}`);
      }
    }
    if (!text.trim()) throw new Fail(`no text deltas (events: ${seen.join(",")})`);
    if (!id) throw new Fail("no interaction id in interaction.created/completed");
    // An unseeded tiny model may ramble to the output cap: completed or incomplete both end it.
    if (!["completed", "incomplete"].includes(finalStatus)) throw new Fail(`interaction.completed status is ${finalStatus}`);
    const got = await ai.interactions.get(id, {}, R);
    const stored = modelText(got.steps);
    if (stored !== text) throw new Fail(`streamed text != GET text: ${JSON.stringify(text.slice(0, 80))} vs ${JSON.stringify(stored.slice(0, 80))}`);
    if (!(got.steps || []).some((s) => s.type === "user_input")) throw new Fail("GET steps lack the user_input step");
  }],
  ["store_false_empty_id", async () => {
    const it = await ai.interactions.create({ model: MODEL, input: "Say hi.", store: false }, R);
    answer(it);
    if (it.id !== "") throw new Fail(`store:false gave id ${JSON.stringify(it.id)}, expected ""`);
    // The SDK sends GET /v1/interactions/?stream=false for id "".
    await expectStatus(() => ai.interactions.get(it.id, {}, R), 404, "NotFoundError", "GET of the store:false id");
  }],
  ["previous_unknown_404", async () => {
    await expectStatus(() => ai.interactions.create(
      { model: MODEL, input: "Hi", previous_interaction_id: "v1_doesnotexist" + Date.now() }, R),
    404, "NotFoundError", "unknown previous_interaction_id");
  }],
  ["unknown_field_400", async () => {
    // `body` in the request options is merged into the JSON body (extra_body).
    const e = await expectStatus(() => ai.interactions.create(
      { model: MODEL, input: "Hi" }, { ...R, body: { conformance_bogus_field: 1 } }),
    400, "BadRequestError", "unknown top-level field");
    const code = e.error?.error?.code;
    if (code !== undefined && code !== "invalid_request") throw new Fail(`error.code is ${JSON.stringify(code)}, expected "invalid_request"`);
  }],
  ["delete_then_get_404", async () => {
    const it = await ai.interactions.create({ model: MODEL, input: "Say hi." }, R);
    answer(it);
    if (!it.id) throw new Fail("stored interaction has an empty id");
    await ai.interactions.delete(it.id, {}, R);
    await expectStatus(() => ai.interactions.get(it.id, {}, R), 404, "NotFoundError", "GET after delete");
  }],
  ["max_output_tokens_incomplete", async () => {
    const it = await ai.interactions.create({
      model: MODEL, input: "Write a long essay about the history of computing.",
      generation_config: { max_output_tokens: 5 },
    }, R);
    if (it.status !== "incomplete") throw new Fail(`status is ${JSON.stringify(it.status)}, expected "incomplete"`);
  }],
  ["seed_deterministic", async () => {
    const generation_config = { seed: 1234, temperature: 0.9, max_output_tokens: 40 };
    const a = await ai.interactions.create({ model: MODEL, input: "Name three colors.", generation_config }, R);
    const b = await ai.interactions.create({ model: MODEL, input: "Name three colors.", generation_config }, R);
    const ta = modelText(a.steps), tb = modelText(b.steps);
    if (!ta.trim()) throw new Fail("empty text");
    if (ta !== tb) throw new Fail(`same seed gave different text: ${JSON.stringify(ta.slice(0, 60))} vs ${JSON.stringify(tb.slice(0, 60))}`);
  }],
  ["api_key_isolation", async () => {
    const it = await ai.interactions.create({ model: MODEL, input: "Say hi." }, R);
    answer(it);
    const other = makeClient("conformance-other-key-" + Math.random().toString(36).slice(2, 10));
    await expectStatus(() => other.interactions.get(it.id, {}, R), 404, "NotFoundError", "GET with another key");
    await ai.interactions.get(it.id, {}, R); // still there for its owner
  }],
  ["stateless_roundtrip", async () => {
    // history.push(...interaction.steps) sends the server's own step JSON back
    // verbatim (JS does no re-serialisation): whatever the server emits in
    // steps (nulls, extra keys) must be accepted as input.
    const history = [{ type: "user_input", content: [{ type: "text", text: "I have 2 dogs." }] }];
    const i1 = await ai.interactions.create({ model: MODEL, store: false, input: history }, R);
    answer(i1);
    history.push(...i1.steps);
    history.push({ type: "user_input", content: [{ type: "text", text: "How many paws?" }] });
    const i2 = await ai.interactions.create({ model: MODEL, store: false, input: history }, R);
    answer(i2);
    if (typeof i2.output_text === "string" && i2.output_text !== modelText([i2.steps.at(-1)])) {
      throw new Fail("output_text differs from the last model_output text");
    }
  }],
];

// ---------------------------------------------------------------- helpers for the function-calling,
// structured-output and background checks
const WEATHER_TOOL = {
  type: "function", name: "get_weather", description: "Get the current weather for a location.",
  parameters: {
    type: "object",
    properties: {
      location: { type: "string", description: "City name, e.g. Boston, MA" },
      unit: { type: "string", enum: ["celsius", "fahrenheit"] },
    },
    required: ["location"],
  },
};
const RECIPE_SCHEMA = {
  type: "object",
  properties: { recipe_name: { type: "string" }, ingredients: { type: "array", items: { type: "string" } } },
  required: ["recipe_name", "ingredients"],
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fnCalls = (steps) => (steps || []).filter((s) => s.type === "function_call");
const deltaText = (ev) => (ev.event_type === "step.delta" && ev.delta?.type === "text" ? ev.delta.text || "" : "");

function checkWeatherCall(c, what) {
  if (typeof c?.id !== "string" || !c.id) throw new Fail(`${what}: function_call without id: ${JSON.stringify(c)}`);
  if (c.name !== "get_weather") throw new Fail(`${what}: function_call name ${JSON.stringify(c.name)}`);
  const a = c.arguments;
  if (!a || typeof a !== "object" || Array.isArray(a)) throw new Fail(`${what}: arguments not an object: ${JSON.stringify(a)}`);
  if (typeof a.location !== "string") throw new Fail(`${what}: arguments lack the required string location: ${JSON.stringify(a)}`);
  if ("unit" in a && !["celsius", "fahrenheit"].includes(a.unit)) throw new Fail(`${what}: unit ${JSON.stringify(a.unit)} not in the enum`);
}

function checkRecipe(text, what) {
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Fail(`${what}: output is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v) || typeof v.recipe_name !== "string" ||
      !Array.isArray(v.ingredients) || !v.ingredients.every((x) => typeof x === "string")) {
    throw new Fail(`${what}: output does not match the schema: ${JSON.stringify(text.slice(0, 120))}`);
  }
}

async function poll(id) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const it = await ai.interactions.get(id, {}, R);
    if (it.status !== "in_progress" && it.status !== "queued") return it;
    if (Date.now() > deadline) throw new Fail(`interaction ${id} still ${it.status} after ${TIMEOUT_MS} ms`);
    await sleep(200);
  }
}

// Events of a stream; with stopAfterText, stop (and drop the connection) after that many text deltas.
async function collect(stream, stopAfterText = null) {
  const evs = [];
  let n = 0;
  for await (const ev of stream) {
    if (ev.event_type === "error") throw new Fail(`error event: ${JSON.stringify(ev)}`);
    evs.push(ev);
    if (deltaText(ev) && stopAfterText !== null && ++n >= stopAfterText) break;
  }
  return evs;
}

checks.push(
  ["fc_any_stateful", async () => {
    const it = await ai.interactions.create({
      model: MODEL, input: "What is the weather like in Boston?", tools: [WEATHER_TOOL],
      generation_config: { tool_choice: "any" },
    }, R);
    const calls = fnCalls(it.steps);
    if (calls.length !== 1 || it.steps.length !== 1) throw new Fail(`expected exactly one function_call step, got ${JSON.stringify(it.steps?.map((s) => s.type))}`);
    checkWeatherCall(calls[0], "tool_choice any");
    if (it.status !== "requires_action") throw new Fail(`status ${JSON.stringify(it.status)}, expected "requires_action"`);
    const it2 = await ai.interactions.create({
      model: MODEL, previous_interaction_id: it.id, tools: [WEATHER_TOOL],
      input: [{ type: "function_result", call_id: calls[0].id, name: "get_weather", result: { temperature_c: 18, conditions: "sunny" } }],
      // tool_choice none: under auto the tiny model may just call the tool again.
      generation_config: { max_output_tokens: 40, tool_choice: "none" },
    }, R);
    if (!["completed", "incomplete"].includes(it2.status)) throw new Fail(`turn 2 status ${JSON.stringify(it2.status)}`);
    if (!modelText(it2.steps).trim()) throw new Fail(`turn 2 has no model_output text: ${JSON.stringify(it2.steps?.map((s) => s.type))}`);
  }],
  ["fc_stateless", async () => {
    const history = [{ type: "user_input", content: [{ type: "text", text: "What's the weather in Paris?" }] }];
    const i1 = await ai.interactions.create({ model: MODEL, input: history, tools: [WEATHER_TOOL], store: false, generation_config: { tool_choice: "any" } }, R);
    const calls = fnCalls(i1.steps);
    if (calls.length !== 1) throw new Fail(`expected one function_call, got ${JSON.stringify(i1.steps?.map((s) => s.type))}`);
    checkWeatherCall(calls[0], "stateless turn 1");
    history.push(...i1.steps); // the server's own step JSON, sent back verbatim
    history.push({ type: "function_result", call_id: calls[0].id, name: "get_weather", result: { temperature_c: 21, conditions: "cloudy" } });
    const i2 = await ai.interactions.create({ model: MODEL, input: history, tools: [WEATHER_TOOL], store: false, generation_config: { max_output_tokens: 40, tool_choice: "none" } }, R);
    if (!["completed", "incomplete"].includes(i2.status)) throw new Fail(`turn 2 status ${JSON.stringify(i2.status)}`);
    if (!modelText(i2.steps).trim()) throw new Fail("turn 2 has no model_output text");
  }],
  ["fc_any_seeds_valid", async () => {
    for (const seed of [0, 1, 2]) {
      const it = await ai.interactions.create({
        model: MODEL, input: "Tell me about the weather in Tokyo.", tools: [WEATHER_TOOL],
        generation_config: { tool_choice: "any", seed },
      }, R);
      const calls = fnCalls(it.steps);
      if (calls.length !== 1) throw new Fail(`seed ${seed}: expected one function_call, got ${JSON.stringify(it.steps?.map((s) => s.type))}`);
      checkWeatherCall(calls[0], `seed ${seed}`);
    }
  }],
  ["fc_stream", async () => {
    const stream = await ai.interactions.create({
      model: MODEL, input: "What is the weather in Rome?", tools: [WEATHER_TOOL], stream: true,
      generation_config: { tool_choice: "any" },
    }, R);
    const seen = [];
    let shell = null, args = "", final = null;
    for await (const ev of stream) {
      seen.push(ev.event_type);
      if (ev.event_type === "step.start") shell = ev.step;
      else if (ev.event_type === "step.delta") {
        if (ev.delta?.type !== "arguments_delta") throw new Fail(`unexpected delta ${JSON.stringify(ev.delta)}`);
        args += ev.delta.arguments || "";
      } else if (ev.event_type === "interaction.completed") final = ev.interaction.status;
      else if (ev.event_type === "error") throw new Fail(`error event: ${JSON.stringify(ev)}`);
    }
    const order = seen.filter((e) => e.startsWith("step."));
    if (order[0] !== "step.start" || order.at(-1) !== "step.stop" || !order.includes("step.delta")) throw new Fail(`step events out of order: ${seen.join(",")}`);
    if (shell?.type !== "function_call" || !shell.id || shell.name !== "get_weather") throw new Fail(`step.start shell ${JSON.stringify(shell)}`);
    let parsed;
    try {
      parsed = JSON.parse(args);
    } catch (e) {
      throw new Fail(`concatenated arguments_delta is not JSON: ${JSON.stringify(args)}`);
    }
    checkWeatherCall({ id: shell.id, name: shell.name, arguments: parsed }, "streamed call");
    if (final !== "requires_action") throw new Fail(`interaction.completed status ${JSON.stringify(final)}`);
  }],
  ["fc_builtin_tool_400", async () => {
    await expectStatus(() => ai.interactions.create({ model: MODEL, input: "Search the web for cats.", tools: [{ type: "google_search" }] }, R),
      400, "BadRequestError", "google_search tool");
  }],
  ["json_schema_seeds", async () => {
    for (const seed of [0, 1, 2]) {
      const it = await ai.interactions.create({
        model: MODEL, input: "Give me a cookie recipe.", generation_config: { seed },
        response_format: { type: "text", mime_type: "application/json", schema: RECIPE_SCHEMA },
      }, R);
      checkRecipe(modelText(it.steps), `seed ${seed}`);
      if (it.status !== "completed") throw new Fail(`seed ${seed}: status ${JSON.stringify(it.status)}`);
      if (typeof it.output_text === "string") JSON.parse(it.output_text);
    }
  }],
  ["background_poll", async () => {
    const it = await ai.interactions.create({ model: MODEL, input: "Tell me a short story about a cat.", background: true, generation_config: { max_output_tokens: 40 } }, R);
    if (!["in_progress", "queued"].includes(it.status)) throw new Fail(`background create status ${JSON.stringify(it.status)}`);
    if (!it.id) throw new Fail("background interaction has no id");
    const done = await poll(it.id);
    if (!["completed", "incomplete"].includes(done.status)) throw new Fail(`ended ${JSON.stringify(done.status)}`);
    answer(done);
    await expectStatus(() => ai.interactions.create({ model: MODEL, input: "Hi", background: true, store: false }, R),
      400, "BadRequestError", "background with store:false");
  }],
  ["background_stream_resume", async () => {
    const it = await ai.interactions.create({ model: MODEL, input: "Tell me a story about a brave knight.", background: true, generation_config: { max_output_tokens: 60, seed: 5 } }, R);
    // Attach while it runs, read a few text deltas, drop the connection, resume after the last event seen.
    const head = await collect(await ai.interactions.get(it.id, { stream: true }, R), 3);
    const ids = head.map((e) => e.event_id);
    if (!ids.every((i) => typeof i === "string" && i)) throw new Fail(`events lack event_id: ${JSON.stringify(ids)}`);
    const tail = await collect(await ai.interactions.get(it.id, { stream: true, last_event_id: ids.at(-1) }, R));
    const tids = tail.map((e) => e.event_id);
    const rep = tids.filter((i) => ids.includes(i));
    if (rep.length) throw new Fail(`resumed stream repeats events ${JSON.stringify(rep)}`);
    if (tail.at(-1)?.event_type !== "interaction.completed") {
      const now = (await ai.interactions.get(it.id, {}, R)).status;
      throw new Fail(`resume (last_event_id=${JSON.stringify(ids.at(-1))}, the newest event seen) gave ${tail.length} events, not ending with interaction.completed; GET status now ${JSON.stringify(now)}`);
    }
    const text = head.map(deltaText).join("") + tail.map(deltaText).join("");
    const got = await poll(it.id);
    if (modelText(got.steps) !== text) throw new Fail(`head+resumed text != GET text: ${JSON.stringify(text.slice(0, 80))} vs ${JSON.stringify(modelText(got.steps).slice(0, 80))}`);
    // Resume the finished interaction after an event seen live (the 1st text delta).
    const cut = head.findIndex((e) => deltaText(e));
    const rest = await collect(await ai.interactions.get(it.id, { stream: true, last_event_id: ids[cut] }, R));
    const before = head.slice(0, cut + 1).map(deltaText).join("");
    if (before + rest.map(deltaText).join("") !== text) throw new Fail(`resume from ${ids[cut]}: text before + after != full text`);
  }],
  ["background_cancel", async () => {
    const it = await ai.interactions.create({
      model: MODEL, input: "Write a very long, detailed story about a dragon and a village.",
      background: true, generation_config: { max_output_tokens: 400, seed: 7 }, // seed 7: runs to the limit
    }, R);
    const c = await ai.interactions.cancel(it.id, {}, R);
    if (c.status !== "cancelled") throw new Fail(`cancel returned status ${JSON.stringify(c.status)}, expected "cancelled"`);
    const got = await ai.interactions.get(it.id, {}, R);
    if (got.status !== "cancelled") throw new Fail(`GET after cancel: status ${JSON.stringify(got.status)}`);
    if (modelText(got.steps) !== modelText(c.steps)) throw new Fail("GET text differs from the text kept by cancel");
    if (!(got.steps || []).some((s) => s.type === "user_input")) throw new Fail("cancelled interaction lost its user_input step");
    const again = await ai.interactions.cancel(it.id, {}, R);
    if (again.status !== "cancelled" || modelText(again.steps) !== modelText(c.steps)) throw new Fail("second cancel changed the interaction");
    const done = await ai.interactions.create({ model: MODEL, input: "Say hi.", generation_config: { max_output_tokens: 10 } }, R);
    const c2 = await ai.interactions.cancel(done.id, {}, R);
    if (c2.status !== done.status || modelText(c2.steps) !== modelText(done.steps)) {
      throw new Fail(`cancel of a finished interaction changed it: ${done.status} -> ${c2.status}`);
    }
  }],
  ["files_upload_get_list_delete", async () => {
    // A file larger than one 8 MiB chunk, get, a list longer than one page, delete; a tenant
    // of its own so the listing is known.
    const fs = await import("node:fs");
    const os = await import("node:os");
    const path = await import("node:path");
    const fa = makeClient(`files-js-${Date.now()}-${Math.random()}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lg-files-"));
    try {
      const data = Buffer.alloc(9 * 1024 * 1024 + 123, 0x61);
      const big = path.join(dir, "big.txt");
      fs.writeFileSync(big, data);
      const f = await fa.files.upload({ file: big, config: { mimeType: "text/plain", displayName: "big" } });
      if (Number(f.sizeBytes) !== data.length) throw new Fail(`sizeBytes ${f.sizeBytes} != ${data.length}`);
      if (f.state !== "ACTIVE") throw new Fail(`state ${f.state}`);
      const small = [];
      for (let i = 0; i < 3; i++) {
        const p = path.join(dir, `s${i}.txt`);
        fs.writeFileSync(p, `small ${i}`);
        small.push(await fa.files.upload({ file: p, config: { mimeType: "text/plain" } }));
      }
      const g = await fa.files.get({ name: f.name });
      if (g.name !== f.name || g.displayName !== "big") throw new Fail(`get returned ${JSON.stringify(g)}`);
      const pager = await fa.files.list({ config: { pageSize: 2 } });
      const names = [];
      for await (const x of pager) names.push(x.name);
      const want = [...small].reverse().map((x) => x.name).concat([f.name]);
      if (JSON.stringify(names) !== JSON.stringify(want)) throw new Fail(`list gave ${names}, expected ${want}`);
      await fa.files.delete({ name: f.name });
      let gone = false;
      try { await fa.files.get({ name: f.name }); } catch (e) { gone = (e.status ?? e.code) === 404 || /404/.test(String(e.message)); }
      if (!gone) throw new Fail("the deleted file is still there (or not a 404)");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }],
);

let failed = 0;
for (const [name, fn] of checks) {
  const full = `extra/js/${name}`;
  if (ONLY && !ONLY.test(full)) continue;
  try {
    await fn();
    console.log(`PASS ${full}`);
  } catch (e) {
    failed++;
    let at = "";
    if (!(e instanceof Fail)) {
      const m = String(e?.stack ?? "").match(/sdk_extra\.mjs:(\d+)/);
      if (m) at = ` at line ${m[1]}`;
    }
    const msg = e instanceof Fail ? e.message : `unexpected ${e?.constructor?.name}: ${String(e?.message ?? e).slice(0, 300)}${at}`;
    console.log(`FAIL ${full}: ${msg.replace(/\s+/g, " ")}`);
  }
}
process.exitCode = failed ? 1 : 0;
