#!/usr/bin/env python3
"""The classic API (generateContent & co.) through google-genai (Python) against a live
localgem: the calls the SDK's own docs and frameworks make.

Run with the google-genai 3.x venv (run.sh does this).  Needs GOOGLE_GEMINI_BASE_URL and
GEMINI_API_KEY; CONFORMANCE_VISION_URL (a server whose default model takes images) for the
image check, CONFORMANCE_IMAGE (a JPEG).  Prints ``PASS classic/py/<name>`` or
``FAIL classic/py/<name>: reason`` per check and exits 1 if any failed.
CONFORMANCE_ONLY (regex) selects checks by name.
"""
from __future__ import annotations

import os
import re
import sys
import traceback

from pydantic import BaseModel, Field

from google import genai
from google.genai import errors, types

MODEL = os.environ.get("CONFORMANCE_CLASSIC_MODEL", "gemini-2.5-flash")
TIMEOUT_MS = int(float(os.environ.get("CONFORMANCE_TIMEOUT", 120)) * 1000)
ONLY = os.environ.get("CONFORMANCE_ONLY", "")
VISION_URL = os.environ.get("CONFORMANCE_VISION_URL", "")
IMAGE = os.environ.get("CONFORMANCE_IMAGE", "")


def make_client(base_url: str | None = None) -> genai.Client:
    opts = {"timeout": TIMEOUT_MS, "retry_options": types.HttpRetryOptions(attempts=1)}
    if base_url:
        opts["base_url"] = base_url
    return genai.Client(api_key=os.environ["GEMINI_API_KEY"], http_options=types.HttpOptions(**opts))


client = make_client()
# Greedy, so that a stream and a whole answer can be compared.
GREEDY = types.GenerateContentConfig(temperature=0, max_output_tokens=40)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def t_generate_content():
    r = client.models.generate_content(model=MODEL, contents="Explain how AI works in a few words")
    check(r.text and r.text.strip(), f"empty text: {r}")
    c = r.candidates[0]
    check(c.content.role == "model", f"role {c.content.role!r}")
    check(c.finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS),
          f"finish_reason {c.finish_reason}")
    u = r.usage_metadata
    check(u.prompt_token_count > 0 and u.candidates_token_count > 0, f"usage {u}")
    check(u.total_token_count == u.prompt_token_count + u.candidates_token_count, f"total {u}")
    check(u.prompt_tokens_details[0].modality == types.MediaModality.TEXT, f"details {u}")
    check(r.model_version == MODEL and r.response_id, f"model_version {r.model_version!r}")


def t_generate_content_stream():
    # The server runs its defaults, which do not promise bit-identical answers across
    # requests: the two requests reuse the shared system prefix from slots computed
    # differently, so a near tie late in a long greedy answer can go either way (seen at
    # token 30 of 40 on an AMD EPYC, neither request drafting). A short answer still shows
    # dropped, repeated or reordered chunks.
    short = types.GenerateContentConfig(temperature=0, max_output_tokens=16)
    whole = client.models.generate_content(model=MODEL, contents="Tell me about the sea.", config=short)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Tell me about the sea.",
                                                         config=short))
    check(len(chunks) > 2, f"{len(chunks)} chunks")
    streamed = "".join(ch.text or "" for ch in chunks)
    check(streamed == whole.text, f"stream {streamed!r} != whole {whole.text!r}")
    last = chunks[-1]
    check(last.candidates[0].finish_reason == whole.candidates[0].finish_reason, "finish reason")
    check(last.usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count,
          f"usage {last.usage_metadata} vs {whole.usage_metadata}")


def t_count_tokens():
    contents = "The quick brown fox jumps over the lazy dog."
    n = client.models.count_tokens(model=MODEL, contents=contents).total_tokens
    r = client.models.generate_content(model=MODEL, contents=contents, config=GREEDY)
    check(n == r.usage_metadata.prompt_token_count,
          f"count_tokens {n} != prompt_token_count {r.usage_metadata.prompt_token_count}")


def t_chats_multi_turn():
    chat = client.chats.create(model=MODEL, config=GREEDY)
    a = chat.send_message("I have 2 dogs in my house.")
    b = chat.send_message("How many paws are in my house?")
    check(a.text and b.text, "empty answer")
    history = chat.get_history()
    check([c.role for c in history] == ["user", "model", "user", "model"],
          f"history roles {[c.role for c in history]}")
    # The second turn resends the first: its prefix is served from the KV cache.
    cached = b.usage_metadata.cached_content_token_count or 0
    check(cached >= a.usage_metadata.prompt_token_count // 2,
          f"turn 2 reused {cached} of {b.usage_metadata.prompt_token_count} prompt tokens "
          f"(turn 1's prompt was {a.usage_metadata.prompt_token_count})")
    # A streamed turn joins the same history.
    text = "".join(ch.text or "" for ch in chat.send_message_stream("And cats?"))
    check(text, "empty streamed turn")
    # (The SDK keeps one model content per streamed chunk.)
    roles = [c.role for c in chat.get_history()]
    check(roles[:5] == ["user", "model", "user", "model", "user"] and set(roles[5:]) == {"model"},
          f"history after a streamed turn: {roles}")


def t_automatic_function_calling():
    called = []

    def get_weather(city: str) -> dict:
        """Returns the current weather of a city."""
        called.append(city)
        return {"city": city, "weather": "sunny", "celsius": 21}

    # ANY: a call is certain even from a tiny model; the SDK runs it and sends the result.
    cfg = types.GenerateContentConfig(
        tools=[get_weather], temperature=0, max_output_tokens=60,
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(maximum_remote_calls=2))
    r = client.models.generate_content(model=MODEL, contents="What is the weather like in Boston?", config=cfg)
    check(called and all(isinstance(c, str) and c for c in called), f"function calls {called}")
    hist = r.automatic_function_calling_history or []
    kinds = [(c.role, [("call" if p.function_call else "response" if p.function_response else "text")
                       for p in c.parts]) for c in hist]
    check(len(hist) >= 3 and kinds[1] == ("model", ["call"]) and kinds[2] == ("user", ["response"]),
          f"AFC history {kinds}")
    resp = hist[2].parts[0].function_response
    check(resp.name == "get_weather" and resp.response == {"result": {"city": called[0], "weather": "sunny",
                                                                        "celsius": 21}},
          f"function response {resp}")
    # The call came back with an id and object args.
    call = hist[1].parts[0].function_call
    check(call.id and isinstance(call.args, dict), f"call {call}")


class Recipe(BaseModel):
    name: str = Field(max_length=30)
    ingredients: list[str] = Field(max_length=3)


def t_json_schema_pydantic():
    r = client.models.generate_content(
        model=MODEL, contents="Give me a cookie recipe.",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Recipe))
    check(isinstance(r.parsed, Recipe), f"parsed {r.parsed!r} from {r.text!r}")
    check(len(r.parsed.ingredients) <= 3, f"{r.parsed}")
    # The same through response_json_schema.
    r = client.models.generate_content(
        model=MODEL, contents="Give me a cookie recipe.",
        config=types.GenerateContentConfig(response_mime_type="application/json",
                                           response_json_schema=Recipe.model_json_schema()))
    Recipe.model_validate_json(r.text)


def t_system_instruction_and_config():
    r = client.models.generate_content(
        model=MODEL, contents="Hello there",
        config=types.GenerateContentConfig(system_instruction="You are a cat. Your name is Neko.",
                                           max_output_tokens=3, top_k=20, seed=5,
                                           thinking_config=types.ThinkingConfig(thinking_budget=0)))
    check(r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS, f"{r.candidates[0].finish_reason}")
    check(r.usage_metadata.candidates_token_count <= 3, f"{r.usage_metadata}")


def t_errors():
    for what, fn, status in [
        ("candidate_count 2", lambda: client.models.generate_content(
            model=MODEL, contents="x", config=types.GenerateContentConfig(candidate_count=2)), 400),
        ("unknown model", lambda: client.models.generate_content(model="llama-nope", contents="x"), 404),
        ("google_search", lambda: client.models.generate_content(
            model=MODEL, contents="x",
            config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())])), 400),
    ]:
        try:
            fn()
        except errors.ClientError as e:
            check(e.code == status and e.message, f"{what}: {e.code} {e.message!r}")
            continue
        raise Fail(f"{what}: no error")


def t_models_list_get():
    models = list(client.models.list())
    check(models, "no models")
    check(all("generateContent" in (m.supported_actions or []) for m in models),
          f"{[(m.name, m.supported_actions) for m in models]}")
    m = client.models.get(model=MODEL)
    check(m.name == f"models/{MODEL}" and m.input_token_limit > 0, f"{m}")


def t_image_upload():
    if not VISION_URL or not IMAGE:
        raise Skip("no vision server")
    vision = make_client(VISION_URL)
    f = vision.files.upload(file=IMAGE)
    r = vision.models.generate_content(model=MODEL, contents=[f, "Describe this image."],
                                       config=types.GenerateContentConfig(max_output_tokens=20))
    details = {d.modality: d.token_count for d in r.usage_metadata.prompt_tokens_details}
    check(details.get(types.MediaModality.IMAGE, 0) > 0, f"no image tokens: {details}")
    # The text-only model says it cannot take images, in a 400.
    g = client.files.upload(file=IMAGE)
    try:
        client.models.generate_content(model=MODEL, contents=[g, "Describe this image."])
    except errors.ClientError as e:
        check(e.code == 400 and "image" in e.message, f"{e.code} {e.message}")
    else:
        raise Fail("a text-only model took an image")


def t_audio_and_video():
    """The audio-understanding and video-understanding calls of Google's docs: inline bytes
    for audio, an upload for video; usage names the modality, and a text-only model refuses
    both with a 400 that names it."""
    if not VISION_URL or not IMAGE:
        raise Skip("no vision server")
    here = os.path.dirname(IMAGE)
    mp3, mp4 = os.path.join(here, "organ.mp3"), os.path.join(here, "organ.mp4")
    media = make_client(VISION_URL)
    with open(mp3, "rb") as f:
        sound = types.Part.from_bytes(data=f.read(), mime_type="audio/mp3")
    r = media.models.generate_content(model=MODEL, contents=["Describe this audio clip", sound],
                                      config=types.GenerateContentConfig(max_output_tokens=20))
    details = {d.modality: d.token_count for d in r.usage_metadata.prompt_tokens_details}
    check(details.get(types.MediaModality.AUDIO, 0) > 0, f"no audio tokens: {details}")
    clip = media.files.upload(file=mp4)
    r = media.models.generate_content(model=MODEL, contents=[clip, "Summarize this video."],
                                      config=types.GenerateContentConfig(max_output_tokens=20))
    details = {d.modality: d.token_count for d in r.usage_metadata.prompt_tokens_details}
    check(details.get(types.MediaModality.VIDEO, 0) > 0, f"no video tokens: {details}")
    for part, kind in ((sound, "audio"), (client.files.upload(file=mp4), "video")):
        try:
            client.models.generate_content(model=MODEL, contents=[part, "Describe it."])
        except errors.ClientError as e:
            check(e.code == 400 and f"cannot take {kind} input" in e.message,
                  f"{e.code} {e.message}")
        else:
            raise Fail(f"a text-only model took {kind}")


class Skip(Exception):
    pass


CHECKS = [
    ("generate_content", t_generate_content),
    ("generate_content_stream", t_generate_content_stream),
    ("count_tokens", t_count_tokens),
    ("chats_multi_turn", t_chats_multi_turn),
    ("automatic_function_calling", t_automatic_function_calling),
    ("json_schema_pydantic", t_json_schema_pydantic),
    ("system_instruction_and_config", t_system_instruction_and_config),
    ("errors", t_errors),
    ("models_list_get", t_models_list_get),
    ("image_upload", t_image_upload),
    ("audio_and_video", t_audio_and_video),
]


def main() -> int:
    failed = 0
    for name, fn in CHECKS:
        full = f"classic/py/{name}"
        if ONLY and not re.search(ONLY, full):
            continue
        try:
            fn()
            print(f"PASS {full}", flush=True)
        except Skip as e:
            print(f"SKIP {full}: {e}", flush=True)
        except Fail as e:
            failed += 1
            print(f"FAIL {full}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            where = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            at = f" at line {where[-1].lineno}" if where else ""
            print(f"FAIL {full}: unexpected {tb[:300]}{at}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
