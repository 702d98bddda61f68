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
    if (finalStatus !== "completed") throw new Fail(`interaction.completed status is ${finalStatus}`);
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
