// The classic API (generateContent & co.) through @google/genai (JavaScript) against a
// live localgem.
//
// run.sh copies this file into the work dir (next to a node_modules symlink) and runs
// `node classic.mjs`. Needs GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY;
// CONFORMANCE_VISION_URL and CONFORMANCE_IMAGE for the image check. Prints
// "PASS classic/js/<name>" or "FAIL classic/js/<name>: reason" per check; exits 1 if any
// failed. CONFORMANCE_ONLY (regex) selects checks by name.
import {
  GoogleGenAI, createPartFromUri, createPartFromFunctionResponse, FunctionCallingConfigMode,
} from "@google/genai";

const MODEL = process.env.CONFORMANCE_CLASSIC_MODEL || "gemini-2.5-flash";
const TIMEOUT_MS = Math.round(Number(process.env.CONFORMANCE_TIMEOUT || 120) * 1000);
const ONLY = process.env.CONFORMANCE_ONLY ? new RegExp(process.env.CONFORMANCE_ONLY) : null;
const VISION_URL = process.env.CONFORMANCE_VISION_URL || "";
const IMAGE = process.env.CONFORMANCE_IMAGE || "";

const makeClient = (baseUrl) => new GoogleGenAI({
  apiKey: process.env.GEMINI_API_KEY,
  httpOptions: { timeout: TIMEOUT_MS, ...(baseUrl ? { baseUrl } : {}) },
});
const ai = makeClient();
const GREEDY = { temperature: 0, maxOutputTokens: 40 };

class Fail extends Error {}
class Skip extends Error {}
const check = (cond, what) => { if (!cond) throw new Fail(what); };

const WEATHER = {
  name: "get_weather",
  description: "Get the current weather in a given location",
  parametersJsonSchema: {
    type: "object",
    properties: { location: { type: "string", description: "The city and state, e.g. San Francisco, CA" } },
    required: ["location"],
  },
};

const checks = [
  ["generate_content", async () => {
    const r = await ai.models.generateContent({ model: MODEL, contents: "Explain how AI works in a few words" });
    check(r.text && r.text.trim(), `empty text ${JSON.stringify(r)}`);
    const c = r.candidates[0];
    check(c.content.role === "model" && ["STOP", "MAX_TOKENS"].includes(c.finishReason), JSON.stringify(c));
    const u = r.usageMetadata;
    check(u.promptTokenCount > 0 && u.candidatesTokenCount > 0 && u.totalTokenCount === u.promptTokenCount + u.candidatesTokenCount,
      JSON.stringify(u));
    check(r.modelVersion === MODEL && r.responseId, `${r.modelVersion} ${r.responseId}`);
  }],
  ["generate_content_stream", async () => {
    // A short answer: under the server's defaults two identical requests are not promised
    // bit-identical answers (see classic.py), and a near tie late in a long one can go
    // either way; 16 tokens still show dropped, repeated or reordered chunks.
    const short = { temperature: 0, maxOutputTokens: 16 };
    const whole = await ai.models.generateContent({ model: MODEL, contents: "Tell me about the sea.", config: short });
    const stream = await ai.models.generateContentStream({ model: MODEL, contents: "Tell me about the sea.", config: short });
    let text = "", n = 0, last = null;
    for await (const chunk of stream) { text += chunk.text ?? ""; n += 1; last = chunk; }
    check(n > 2, `${n} chunks`);
    check(text === whole.text, `stream ${JSON.stringify(text)} != whole ${JSON.stringify(whole.text)}`);
    check(last.candidates[0].finishReason === whole.candidates[0].finishReason, "finish reason");
    check(last.usageMetadata.candidatesTokenCount === whole.usageMetadata.candidatesTokenCount, "usage");
  }],
  ["count_tokens", async () => {
    const contents = "The quick brown fox jumps over the lazy dog.";
    const { totalTokens } = await ai.models.countTokens({ model: MODEL, contents });
    const r = await ai.models.generateContent({ model: MODEL, contents, config: GREEDY });
    check(totalTokens === r.usageMetadata.promptTokenCount, `${totalTokens} vs ${r.usageMetadata.promptTokenCount}`);
  }],
  ["chats_multi_turn", async () => {
    const chat = ai.chats.create({ model: MODEL, config: GREEDY });
    const a = await chat.sendMessage({ message: "I have 2 dogs in my house." });
    const b = await chat.sendMessage({ message: "How many paws are in my house?" });
    check(a.text && b.text, "empty answer");
    const roles = chat.getHistory().map((c) => c.role);
    check(JSON.stringify(roles) === JSON.stringify(["user", "model", "user", "model"]), `roles ${roles}`);
    const cached = b.usageMetadata.cachedContentTokenCount ?? 0;
    check(cached >= Math.floor(a.usageMetadata.promptTokenCount / 2),
      `turn 2 reused ${cached} of ${b.usageMetadata.promptTokenCount} prompt tokens`);
  }],
  ["function_calling", async () => {
    const tools = [{ functionDeclarations: [WEATHER] }];
    const contents = [{ role: "user", parts: [{ text: "What is the weather like in Boston?" }] }];
    const r = await ai.models.generateContent({
      model: MODEL, contents,
      config: { tools, temperature: 0, toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.ANY } } },
    });
    const calls = r.functionCalls ?? [];
    check(calls.length === 1 && calls[0].name === "get_weather" && typeof calls[0].args?.location === "string" && calls[0].id,
      `calls ${JSON.stringify(calls)}`);
    contents.push(r.candidates[0].content);
    contents.push({ role: "user", parts: [createPartFromFunctionResponse(calls[0].id, "get_weather", { result: "72F and sunny" })] });
    const r2 = await ai.models.generateContent({
      model: MODEL, contents,
      config: { tools, ...GREEDY, toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.NONE } } },
    });
    check(r2.text && !(r2.functionCalls ?? []).length, `turn 2: ${JSON.stringify(r2.candidates[0].content)}`);
  }],
  ["json_schema", async () => {
    const r = await ai.models.generateContent({
      model: MODEL, contents: "Name a city and its population.",
      config: {
        responseMimeType: "application/json",
        responseJsonSchema: {
          type: "object",
          properties: { city: { type: "string", maxLength: 30 }, population: { type: "integer", minimum: 0 } },
          required: ["city", "population"],
        },
      },
    });
    const v = JSON.parse(r.text);
    check(typeof v.city === "string" && Number.isInteger(v.population), r.text);
  }],
  ["models_list_get", async () => {
    const names = [];
    for await (const m of await ai.models.list()) {
      names.push(m.name);
      check((m.supportedActions ?? []).includes("generateContent"), JSON.stringify(m));
    }
    check(names.length > 0, "no models");
    const m = await ai.models.get({ model: MODEL });
    check(m.name === `models/${MODEL}` && m.inputTokenLimit > 0, JSON.stringify(m));
  }],
  ["errors", async () => {
    let err = null;
    try { await ai.models.generateContent({ model: MODEL, contents: "x", config: { candidateCount: 2 } }); } catch (e) { err = e; }
    check(err && err.status === 400 && String(err.message).includes("candidateCount"), `${err}`);
  }],
  ["image_upload", async () => {
    if (!VISION_URL || !IMAGE) throw new Skip("no vision server");
    const vision = makeClient(VISION_URL);
    const f = await vision.files.upload({ file: IMAGE, config: { mimeType: "image/jpeg" } });
    const r = await vision.models.generateContent({
      model: MODEL, contents: [createPartFromUri(f.uri, f.mimeType), "Describe this image."], config: { maxOutputTokens: 20 },
    });
    const image = (r.usageMetadata.promptTokensDetails ?? []).find((d) => d.modality === "IMAGE");
    check(image && image.tokenCount > 0, JSON.stringify(r.usageMetadata));
  }],
];

let failed = 0;
for (const [name, fn] of checks) {
  const full = `classic/js/${name}`;
  if (ONLY && !ONLY.test(full)) continue;
  try {
    await fn();
    console.log(`PASS ${full}`);
  } catch (e) {
    if (e instanceof Skip) { console.log(`SKIP ${full}: ${e.message}`); continue; }
    failed += 1;
    const why = e instanceof Fail ? e.message : `unexpected ${e?.constructor?.name}: ${String(e?.message ?? e).slice(0, 300)}`;
    console.log(`FAIL ${full}: ${why}`);
  }
}
process.exit(failed ? 1 : 0);
