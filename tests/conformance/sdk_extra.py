#!/usr/bin/env python3
"""Extra google-genai (Python) checks against a live localgem, beyond the seeds.

Run with the google-genai 3.x venv (run.sh does this).  Needs
GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY in the environment.  Prints
``PASS extra/py/<name>`` or ``FAIL extra/py/<name>: reason`` per check and
exits 1 if any failed.  CONFORMANCE_ONLY (regex) selects checks by name.

Clients are created with retries disabled (HttpRetryOptions(attempts=1)) where
the installed SDK has that API, so that a 5xx shows up as a failure at once
instead of being retried for 30 s.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import uuid

from google import genai
from google.genai import types

MODEL = os.environ.get("CONFORMANCE_MODEL", "gemini-3-flash-preview")
TIMEOUT_MS = int(float(os.environ.get("CONFORMANCE_TIMEOUT", 120)) * 1000)
ONLY = os.environ.get("CONFORMANCE_ONLY", "")


def make_client(api_key: str | None = None) -> genai.Client:
    kw = {"timeout": TIMEOUT_MS}
    if hasattr(types, "HttpRetryOptions"):
        kw["retry_options"] = types.HttpRetryOptions(attempts=1)
    return genai.Client(api_key=api_key or os.environ["GEMINI_API_KEY"],
                        http_options=types.HttpOptions(**kw))


client = make_client()


class Fail(Exception):
    pass


def expect_status(fn, status: int, cls_name: str, what: str):
    """Call fn(); it must raise the SDK's <cls_name> with HTTP <status>."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we classify below
        got = getattr(e, "status_code", None) or getattr(e, "code", None)
        if type(e).__name__ != cls_name or got != status:
            raise Fail(f"{what}: expected {cls_name} ({status}), got {type(e).__name__} "
                       f"(status {got}): {str(e)[:200]}")
        return e
    raise Fail(f"{what}: expected {cls_name} ({status}), but the call succeeded")


def model_text(steps) -> str:
    out = []
    for s in steps or []:
        if getattr(s, "type", None) == "model_output":
            for c in getattr(s, "content", None) or []:
                if getattr(c, "type", None) == "text":
                    out.append(c.text or "")
    return "".join(out)


def answer(it) -> str:
    try:
        t = it.steps[-1].content[0].text
    except Exception as e:  # noqa: BLE001
        raise Fail(f"no steps[-1].content[0].text ({e!r})")
    if not t or not t.strip():
        raise Fail("empty answer text")
    return t


# ----------------------------------------------------------------------------- checks

def t_stream_matches_get():
    stream = client.interactions.create(model=MODEL, input="Say hello in five words.", stream=True)
    text, iid, types_seen, final_status = "", None, [], None
    for ev in stream:
        et = getattr(ev, "event_type", None)
        types_seen.append(et)
        if et in ("interaction.created", "interaction.completed"):
            iid = ev.interaction.id
            if et == "interaction.completed":
                final_status = ev.interaction.status
        elif et == "step.delta" and getattr(ev.delta, "type", None) == "text":
            text += ev.delta.text or ""
        elif et == "error":
            raise Fail(f"error event in stream: {ev}")
    if not text.strip():
        raise Fail(f"no text deltas (events: {types_seen})")
    if not iid:
        raise Fail("no interaction id in interaction.created/completed")
    # An unseeded tiny model may ramble to the output cap: completed or incomplete both end it.
    if final_status not in ("completed", "incomplete"):
        raise Fail(f"interaction.completed status is {final_status!r}")
    got = client.interactions.get(iid)
    stored = model_text(got.steps)
    if stored != text:
        raise Fail(f"streamed text != GET text: {text[:80]!r} vs {stored[:80]!r}")
    if got.status != final_status:
        raise Fail(f"GET status is {got.status!r}, the stream ended {final_status!r}")
    kinds = [s.type for s in got.steps or []]
    if "user_input" not in kinds:
        raise Fail(f"GET steps lack the user_input step: {kinds}")


def t_store_false_empty_id():
    it = client.interactions.create(model=MODEL, input="Say hi.", store=False)
    answer(it)
    if it.id != "":
        raise Fail(f"store=False gave id {it.id!r}, expected ''")
    # GET /v1/interactions/?stream=false is what the SDK sends for id "".
    expect_status(lambda: client.interactions.get(it.id), 404, "NotFoundError", "GET of the store=False id")


def t_store_false_not_chainable():
    # A store=False interaction cannot be referenced later (docs).  With id ""
    # the SDK sends previous_interaction_id: "" - that must not silently work
    # as a chain either; anything but 2xx/5xx is fine, 400/404 expected.
    it = client.interactions.create(model=MODEL, input="Say hi.", store=False)
    try:
        client.interactions.create(model=MODEL, input="Again.", previous_interaction_id=it.id)
    except Exception as e:  # noqa: BLE001
        code = getattr(e, "status_code", None)
        if code not in (400, 404):
            raise Fail(f"expected 400/404, got {type(e).__name__} {code}")
        return
    # Accepting "" as "no previous interaction" is tolerable: not a failure.


def t_previous_unknown_404():
    expect_status(lambda: client.interactions.create(
        model=MODEL, input="Hi", previous_interaction_id="v1_doesnotexist" + uuid.uuid4().hex),
        404, "NotFoundError", "unknown previous_interaction_id")


def t_unknown_field_400():
    e = expect_status(lambda: client.interactions.create(
        model=MODEL, input="Hi", extra_body={"conformance_bogus_field": 1}),
        400, "BadRequestError", "unknown top-level field")
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        code = (body.get("error") or {}).get("code")
        if code != "invalid_request":
            raise Fail(f"error.code is {code!r}, expected 'invalid_request' (body {body})")


def t_delete_then_get_404():
    it = client.interactions.create(model=MODEL, input="Say hi.")
    answer(it)
    if not it.id:
        raise Fail("stored interaction has an empty id")
    got = client.interactions.get(it.id)
    if model_text(got.steps) != model_text(it.steps):
        raise Fail("GET text differs from create text")
    client.interactions.delete(it.id)
    expect_status(lambda: client.interactions.get(it.id), 404, "NotFoundError", "GET after delete")
    expect_status(lambda: client.interactions.delete(it.id), 404, "NotFoundError", "second delete")


def t_max_output_tokens_incomplete():
    it = client.interactions.create(
        model=MODEL, input="Write a long essay about the history of computing.",
        generation_config={"max_output_tokens": 5})
    if it.status != "incomplete":
        raise Fail(f"status is {it.status!r}, expected 'incomplete'")


def t_seed_deterministic():
    cfg = {"seed": 1234, "temperature": 0.9, "max_output_tokens": 40}
    a = client.interactions.create(model=MODEL, input="Name three colors.", generation_config=cfg)
    b = client.interactions.create(model=MODEL, input="Name three colors.", generation_config=cfg)
    ta, tb = model_text(a.steps), model_text(b.steps)
    if not ta.strip():
        raise Fail("empty text")
    if ta != tb:
        raise Fail(f"same seed gave different text: {ta[:60]!r} vs {tb[:60]!r}")


def t_api_key_isolation():
    it = client.interactions.create(model=MODEL, input="Say hi.")
    answer(it)
    other = make_client(api_key="conformance-other-key-" + uuid.uuid4().hex[:8])
    expect_status(lambda: other.interactions.get(it.id), 404, "NotFoundError", "GET with another key")
    expect_status(lambda: other.interactions.create(model=MODEL, input="Hi", previous_interaction_id=it.id),
                  404, "NotFoundError", "previous_interaction_id with another key")
    expect_status(lambda: other.interactions.delete(it.id), 404, "NotFoundError", "DELETE with another key")
    client.interactions.get(it.id)  # still there for its owner


def t_output_text_and_v1beta():
    # The same call through the other path version (/v1beta) must work too.
    kw = {"timeout": TIMEOUT_MS, "api_version": "v1beta"}
    if hasattr(types, "HttpRetryOptions"):
        kw["retry_options"] = types.HttpRetryOptions(attempts=1)
    c = genai.Client(api_key=os.environ["GEMINI_API_KEY"], http_options=types.HttpOptions(**kw))
    it = c.interactions.create(model=MODEL, input="Say hi.")
    t = answer(it)
    ot = getattr(it, "output_text", None)
    if ot is not None and ot != t:
        raise Fail(f"output_text {ot!r} != steps[-1].content[0].text {t!r}")
    got = client.interactions.get(it.id)  # created on /v1beta, fetched on /v1
    if model_text(got.steps) != model_text(it.steps):
        raise Fail("interaction created via /v1beta not identical via /v1")


# ----------------------------------------------------------------------------- helpers for the
# function-calling, structured-output and background checks

TERMINAL = ("completed", "failed", "cancelled", "incomplete", "budget_exceeded", "requires_action")

WEATHER_TOOL = {
    "type": "function", "name": "get_weather",
    "description": "Get the current weather for a location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name, e.g. Boston, MA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
TIME_TOOL = {
    "type": "function", "name": "get_time",
    "description": "Get the current time in a time zone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                   "required": ["timezone"]},
}
RECIPE_SCHEMA = {
    "type": "object",
    "properties": {
        "recipe_name": {"type": "string"},
        "ingredients": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["recipe_name", "ingredients"],
}


def schema_errors(value, schema: dict, path: str = "$") -> list[str]:
    """A small JSON Schema checker (type, enum, properties, required, items,
    additionalProperties: false) - enough for the schemas used here, without
    depending on the jsonschema package (not in the conformance venv)."""
    errs: list[str] = []
    t = schema.get("type")
    kinds = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if t is not None:
        ts = t if isinstance(t, list) else [t]
        if not any(kinds[k](value) for k in ts):
            return [f"{path}: expected {t}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r:.60} not in enum {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{path}: required key {k!r} missing")
        for k, v in value.items():
            if k in props:
                errs += schema_errors(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected key {k!r}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errs += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errs


def fn_calls(steps) -> list:
    return [s for s in steps or [] if getattr(s, "type", None) == "function_call"]


def check_call(step, tool: dict, what: str):
    """step must be a function_call of <tool> with schema-valid arguments."""
    if not isinstance(getattr(step, "id", None), str) or not step.id:
        raise Fail(f"{what}: function_call has no id: {step}")
    if step.name != tool["name"]:
        raise Fail(f"{what}: function_call name {step.name!r}, expected {tool['name']!r}")
    args = step.arguments
    if not isinstance(args, dict):
        raise Fail(f"{what}: arguments is not an object: {args!r}")
    errs = schema_errors(args, tool["parameters"])
    if errs:
        raise Fail(f"{what}: arguments {args} invalid: {errs}")


def check_json_output(it, schema: dict, what: str):
    text = model_text(it.steps)
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Fail(f"{what}: output is not JSON (status {it.status}, {e}): {text[:120]!r}")
    errs = schema_errors(value, schema)
    if errs:
        raise Fail(f"{what}: output {text[:120]!r} does not match the schema: {errs[:3]}")
    return value


def poll(iid: str, timeout: float | None = None):
    """GET until the interaction leaves in_progress/queued."""
    deadline = time.monotonic() + (timeout or TIMEOUT_MS / 1000)
    while True:
        it = client.interactions.get(iid)
        if it.status not in ("in_progress", "queued"):
            return it
        if time.monotonic() > deadline:
            raise Fail(f"interaction {iid} still {it.status!r} after polling for {timeout or TIMEOUT_MS / 1000}s")
        time.sleep(0.2)


def delta_text(ev) -> str:
    if getattr(ev, "event_type", None) == "step.delta" and getattr(ev.delta, "type", None) == "text":
        return ev.delta.text or ""
    return ""


# ----------------------------------------------------------------------------- function calling

def t_fc_any_stateful():
    it = client.interactions.create(
        model=MODEL, input="What is the weather like in Boston?", tools=[WEATHER_TOOL],
        generation_config={"tool_choice": "any"})
    calls = fn_calls(it.steps)
    if len(calls) != 1 or len(it.steps) != 1:
        raise Fail(f"tool_choice any: expected exactly one function_call step, got {[s.type for s in it.steps or []]}")
    check_call(calls[0], WEATHER_TOOL, "tool_choice any")
    if it.status != "requires_action":
        raise Fail(f"status with a pending function_call is {it.status!r}, expected 'requires_action'")
    got = client.interactions.get(it.id)
    gcalls = fn_calls(got.steps)
    if [(c.id, c.name, c.arguments) for c in gcalls] != [(calls[0].id, calls[0].name, calls[0].arguments)]:
        raise Fail(f"GET function_call steps {gcalls} differ from create's {calls}")
    # Turn 2: the result, chained with previous_interaction_id (tools sent again, §6.1).
    it2 = client.interactions.create(
        model=MODEL, previous_interaction_id=it.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_result", "call_id": calls[0].id, "name": "get_weather",
                "result": {"temperature_c": 18, "conditions": "sunny"}}],
        # tool_choice none: under auto the tiny model may just call the tool again.
        generation_config={"max_output_tokens": 40, "tool_choice": "none"})
    if it2.status not in ("completed", "incomplete"):
        raise Fail(f"turn 2 status is {it2.status!r}")
    if not model_text(it2.steps).strip():
        raise Fail(f"turn 2 has no model_output text: {[s.type for s in it2.steps or []]}")
    kinds = [s.type for s in client.interactions.get(it2.id).steps or []]
    if "function_result" not in kinds:
        raise Fail(f"GET of turn 2 lacks its function_result input step: {kinds}")


def t_fc_stateless():
    history = [{"type": "user_input", "content": [{"type": "text", "text": "What's the weather in Paris?"}]}]
    it = client.interactions.create(model=MODEL, input=history, tools=[WEATHER_TOOL], store=False,
                                    generation_config={"tool_choice": "any"})
    if it.id != "":
        raise Fail(f"store=False gave id {it.id!r}")
    calls = fn_calls(it.steps)
    if len(calls) != 1:
        raise Fail(f"expected one function_call step, got {[s.type for s in it.steps or []]}")
    check_call(calls[0], WEATHER_TOOL, "stateless turn 1")
    history += list(it.steps)  # the SDK's step objects, sent back as returned
    history.append({"type": "function_result", "call_id": calls[0].id, "name": "get_weather",
                    "result": {"temperature_c": 21, "conditions": "cloudy"}})
    it2 = client.interactions.create(model=MODEL, input=history, tools=[WEATHER_TOOL], store=False,
                                     generation_config={"max_output_tokens": 40, "tool_choice": "none"})
    if it2.status not in ("completed", "incomplete"):
        raise Fail(f"turn 2 status is {it2.status!r}")
    if not model_text(it2.steps).strip():
        raise Fail(f"turn 2 has no model_output text: {[s.type for s in it2.steps or []]}")


def t_fc_any_seeds_valid():
    for seed in range(10):
        it = client.interactions.create(
            model=MODEL, input="Tell me about the weather in Tokyo.", tools=[WEATHER_TOOL],
            generation_config={"tool_choice": "any", "seed": seed})
        calls = fn_calls(it.steps)
        if len(calls) != 1:
            raise Fail(f"seed {seed}: expected one function_call, got {[s.type for s in it.steps or []]} "
                       f"(status {it.status})")
        check_call(calls[0], WEATHER_TOOL, f"seed {seed}")
        if it.status != "requires_action":
            raise Fail(f"seed {seed}: status {it.status!r}")


def t_fc_tool_choice_modes():
    tools = [WEATHER_TOOL, TIME_TOOL]
    # allowed_tools restricts the choice: with mode any only get_time may be called.
    it = client.interactions.create(
        model=MODEL, input="What's the weather in Paris?", tools=tools,
        generation_config={"tool_choice": {"allowed_tools": {"mode": "any", "tools": ["get_time"]}}})
    calls = fn_calls(it.steps)
    if len(calls) != 1:
        raise Fail(f"allowed_tools any: expected one function_call, got {[s.type for s in it.steps or []]}")
    check_call(calls[0], TIME_TOOL, "allowed_tools any [get_time]")
    # none: no calls at all, just text.
    it = client.interactions.create(
        model=MODEL, input="What's the weather in Paris? Use the tool.", tools=tools,
        generation_config={"tool_choice": "none", "max_output_tokens": 20})
    if fn_calls(it.steps) or it.status == "requires_action":
        raise Fail(f"tool_choice none produced a call: {it.steps} (status {it.status})")
    if not model_text(it.steps).strip():
        raise Fail("tool_choice none: no model_output text")
    # auto / validated: the tiny model may answer or call; whatever it calls must be a
    # declared tool with object arguments (schema-valid under validated), and
    # requires_action goes with a pending call.
    for tc in ("auto", "validated", {"allowed_tools": {"mode": "validated", "tools": ["get_weather"]}}):
        it = client.interactions.create(
            model=MODEL, input="What's the weather in Paris?", tools=tools,
            generation_config={"tool_choice": tc, "max_output_tokens": 40, "seed": 3})
        calls = fn_calls(it.steps)
        if bool(calls) != (it.status == "requires_action"):
            raise Fail(f"tool_choice {tc}: status {it.status!r} with steps {[s.type for s in it.steps or []]}")
        if not calls and not model_text(it.steps).strip():
            raise Fail(f"tool_choice {tc}: neither a call nor text")
        for c in calls:
            allowed = [WEATHER_TOOL] if isinstance(tc, dict) else tools
            tool = next((t for t in allowed if t["name"] == c.name), None)
            if tool is None:
                raise Fail(f"tool_choice {tc}: call of undeclared/disallowed tool {c.name!r}")
            if tc != "auto":
                check_call(c, tool, f"tool_choice {tc}")
            elif not isinstance(c.arguments, dict):
                raise Fail(f"tool_choice auto: arguments not an object: {c.arguments!r}")


def t_fc_stream():
    stream = client.interactions.create(
        model=MODEL, input="What is the weather in Rome?", tools=[WEATHER_TOOL], stream=True,
        generation_config={"tool_choice": "any"})
    seen, shell, args, final = [], None, "", None
    for ev in stream:
        et = getattr(ev, "event_type", None)
        seen.append(et)
        if et == "step.start":
            shell = ev.step
        elif et == "step.delta":
            if getattr(ev.delta, "type", None) != "arguments_delta":
                raise Fail(f"unexpected delta {ev.delta} in a function_call step")
            args += ev.delta.arguments or ""
        elif et == "interaction.completed":
            final = ev.interaction.status
        elif et == "error":
            raise Fail(f"error event: {ev}")
    order = [e for e in seen if e.startswith("step.")]
    if order[:1] != ["step.start"] or order[-1:] != ["step.stop"] or "step.delta" not in order:
        raise Fail(f"step events out of order: {seen}")
    if getattr(shell, "type", None) != "function_call" or not getattr(shell, "id", None) \
            or shell.name != "get_weather":
        raise Fail(f"step.start shell is {shell}, expected a function_call with id and name")
    try:
        parsed = json.loads(args)
    except ValueError:
        raise Fail(f"concatenated arguments_delta is not JSON: {args!r}")
    errs = schema_errors(parsed, WEATHER_TOOL["parameters"])
    if errs:
        raise Fail(f"streamed arguments {parsed} invalid: {errs}")
    if final != "requires_action":
        raise Fail(f"interaction.completed status {final!r}, expected 'requires_action'")


def t_fc_builtin_tool_400():
    expect_status(lambda: client.interactions.create(
        model=MODEL, input="Search the web for cats.", tools=[{"type": "google_search"}]),
        400, "BadRequestError", "google_search tool")


# ----------------------------------------------------------------------------- structured output

def t_json_schema_seeds():
    fmt = {"type": "text", "mime_type": "application/json", "schema": RECIPE_SCHEMA}
    for seed in range(20):
        it = client.interactions.create(model=MODEL, input="Give me a cookie recipe.",
                                        response_format=fmt, generation_config={"seed": seed})
        check_json_output(it, RECIPE_SCHEMA, f"seed {seed}")
        if it.status != "completed":
            raise Fail(f"seed {seed}: status {it.status!r}")


def t_json_other_forms():
    person = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    # A bare JSON Schema as response_format, with and without the deprecated mime type.
    it = client.interactions.create(model=MODEL, input="Describe a person.", response_format=person,
                                    response_mime_type="application/json", generation_config={"seed": 1})
    check_json_output(it, person, "bare schema + response_mime_type")
    it = client.interactions.create(model=MODEL, input="Describe a person.", response_format=person,
                                    generation_config={"seed": 2})
    check_json_output(it, person, "bare schema")
    # JSON mode without a schema: any JSON value.
    it = client.interactions.create(model=MODEL, input="Describe a person as JSON.",
                                    response_mime_type="application/json",
                                    generation_config={"seed": 1, "max_output_tokens": 100})
    if it.status == "completed":
        check_json_output(it, {}, "response_mime_type only")
    # Streamed: the text deltas concatenate to schema-valid JSON.
    stream = client.interactions.create(
        model=MODEL, input="Give me a cookie recipe.", stream=True, generation_config={"seed": 4},
        response_format={"type": "text", "mime_type": "application/json", "schema": RECIPE_SCHEMA})
    text = "".join(delta_text(ev) for ev in stream)
    try:
        value = json.loads(text)
    except ValueError:
        raise Fail(f"streamed JSON output does not parse: {text[:120]!r}")
    if schema_errors(value, RECIPE_SCHEMA):
        raise Fail(f"streamed JSON output invalid: {schema_errors(value, RECIPE_SCHEMA)}")


# ----------------------------------------------------------------------------- background

def t_background_poll():
    it = client.interactions.create(model=MODEL, input="Tell me a short story about a cat.",
                                    background=True, generation_config={"max_output_tokens": 40})
    if it.status not in ("in_progress", "queued"):
        raise Fail(f"background create returned status {it.status!r}, expected 'in_progress'")
    if not it.id:
        raise Fail("background interaction has no id")
    if model_text(it.steps):
        raise Fail("background create already returned model text")
    done = poll(it.id)
    if done.status not in ("completed", "incomplete"):
        raise Fail(f"background interaction ended {done.status!r}")
    answer(done)
    if [s.type for s in done.steps][:1] != ["user_input"]:
        raise Fail(f"GET steps do not start with user_input: {[s.type for s in done.steps]}")
    expect_status(lambda: client.interactions.create(
        model=MODEL, input="Hi", background=True, store=False),
        400, "BadRequestError", "background with store=False")


def _collect(stream, stop_after_text: int | None = None):
    """Events of an SSE stream; with stop_after_text, stop after that many text deltas."""
    evs, n = [], 0
    for ev in stream:
        if getattr(ev, "event_type", None) == "error":
            raise Fail(f"error event: {ev}")
        evs.append(ev)
        if delta_text(ev):
            n += 1
            if stop_after_text is not None and n >= stop_after_text:
                break
    return evs


def t_background_stream_resume():
    it = client.interactions.create(model=MODEL, input="Tell me a story about a brave knight.",
                                    background=True, generation_config={"max_output_tokens": 60, "seed": 5})
    # Attach while it runs, read a few text deltas, then drop the connection.
    stream = client.interactions.get(it.id, stream=True)
    head = _collect(stream, stop_after_text=3)
    stream.close()
    if head[:1] and head[0].event_type != "interaction.created":
        raise Fail(f"attached stream starts with {head[0].event_type}")
    ids = [getattr(e, "event_id", None) for e in head]
    if not all(isinstance(i, str) and i for i in ids):
        raise Fail(f"events of a background stream lack event_id: {ids}")
    # Resume after the last event seen: nothing up to it may come again.
    tail = _collect(client.interactions.get(it.id, stream=True, last_event_id=ids[-1]))
    tids = [e.event_id for e in tail]
    if set(tids) & set(ids):
        raise Fail(f"resumed stream repeats events {sorted(set(tids) & set(ids))}")
    if len(set(tids)) != len(tids):
        raise Fail(f"duplicate event_ids in the resumed stream: {tids}")
    if not tail or tail[-1].event_type != "interaction.completed":
        raise Fail(f"resume (last_event_id={ids[-1]!r}, the newest event seen) of a running "
                   f"interaction gave {len(tail)} events, not ending with interaction.completed "
                   f"({[e.event_type for e in tail][-3:]}); GET status now {client.interactions.get(it.id).status!r}")
    final = tail[-1].interaction.status
    text = "".join(delta_text(e) for e in head) + "".join(delta_text(e) for e in tail)
    got = poll(it.id)
    if got.status != final or final not in ("completed", "incomplete"):
        raise Fail(f"final status: stream {final!r}, GET {got.status!r}")
    if model_text(got.steps) != text:
        raise Fail(f"head+resumed text != GET text: {text[:80]!r} vs {model_text(got.steps)[:80]!r}")
    # Replay of the finished interaction (the server may merge deltas now), and a
    # resume of the finished interaction after each event_id seen live.
    full = _collect(client.interactions.get(it.id, stream=True))
    fids = [e.event_id for e in full]
    if not all(isinstance(i, str) and i for i in fids) or len(set(fids)) != len(fids):
        raise Fail(f"replayed event_ids missing or not unique: {fids}")
    if "".join(delta_text(e) for e in full) != text:
        raise Fail("replayed text != GET text")
    if [e.event_type for e in full][-1:] != ["interaction.completed"]:
        raise Fail("replay does not end with interaction.completed")
    for cut in range(len(head)):
        rest = _collect(client.interactions.get(it.id, stream=True, last_event_id=ids[cut]))
        rids = [e.event_id for e in rest]
        if set(rids) & set(ids[:cut + 1]):
            raise Fail(f"resume from {ids[cut]!r} repeats events {sorted(set(rids) & set(ids[:cut + 1]))}")
        if head[cut].event_type == "interaction.created" and any(
                e.event_type == "interaction.created" for e in rest):
            raise Fail(f"resume from {ids[cut]!r} repeats interaction.created")
        before = "".join(delta_text(e) for e in head[:cut + 1])
        after = "".join(delta_text(e) for e in rest)
        if before + after != text:
            raise Fail(f"resume from {ids[cut]!r}: text before + after != full text: "
                       f"{before!r} + {after[:40]!r}... vs {text[:60]!r}...")


def t_background_cancel():
    it = client.interactions.create(
        model=MODEL, input="Write a very long, detailed story about a dragon and a village.",
        background=True, generation_config={"max_output_tokens": 400, "seed": 7})  # seed 7: runs to the limit
    stream = client.interactions.get(it.id, stream=True)
    head = _collect(stream, stop_after_text=1)  # wait until some output exists
    seen = "".join(delta_text(e) for e in head)
    c = client.interactions.cancel(it.id)
    if c.status != "cancelled":
        raise Fail(f"cancel returned status {c.status!r}, expected 'cancelled'")
    ctext = model_text(c.steps)
    if not seen or not ctext.startswith(seen):
        raise Fail(f"cancel lost the output produced so far: streamed {seen!r}, kept {ctext[:80]!r}")
    # The attached stream must end, with the cancelled status.
    rest = _collect(stream)
    if not rest or rest[-1].event_type != "interaction.completed" or rest[-1].interaction.status != "cancelled":
        raise Fail(f"attached stream after cancel ended with {[(e.event_type) for e in rest][-3:]}")
    got = client.interactions.get(it.id)
    if got.status != "cancelled" or model_text(got.steps) != ctext:
        raise Fail(f"GET after cancel: status {got.status!r}, text {model_text(got.steps)[:60]!r} vs {ctext[:60]!r}")
    if seen + "".join(delta_text(e) for e in rest) != ctext:
        raise Fail("streamed text != text kept by cancel")
    # Cancelling a finished interaction returns it unchanged.
    again = client.interactions.cancel(it.id)
    if again.status != "cancelled" or model_text(again.steps) != ctext:
        raise Fail(f"second cancel changed the interaction: {again.status!r}")
    done = client.interactions.create(model=MODEL, input="Say hi.", generation_config={"max_output_tokens": 10})
    c2 = client.interactions.cancel(done.id)
    if c2.status != done.status or model_text(c2.steps) != model_text(done.steps):
        raise Fail(f"cancel of a finished interaction changed it: {done.status!r} -> {c2.status!r}")


def t_files_upload_get_list_delete():
    """A file larger than one 8 MiB chunk, get, a list longer than one page, delete."""
    import hashlib
    import tempfile
    fc = make_client(api_key=f"files-{uuid.uuid4()}")  # a tenant of its own: a known listing
    data = bytes(range(256)) * (9 * 4096 + 17)        # ~9.4 MB: two chunks
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.txt")
        with open(path, "wb") as fh:
            fh.write(data)
        f = fc.files.upload(file=path, config={"mime_type": "text/plain", "display_name": "big"})
        small = []
        for i in range(3):
            p = os.path.join(d, f"s{i}.md")
            with open(p, "w") as fh:
                fh.write(f"# note {i}\n")
            small.append(fc.files.upload(file=p))
    if int(f.size_bytes) != len(data):
        raise Fail(f"sizeBytes {f.size_bytes} != {len(data)}")
    if str(getattr(f.state, "value", f.state)) != "ACTIVE":
        raise Fail(f"state {f.state}")
    import base64
    if f.sha256_hash and base64.b64decode(f.sha256_hash).decode() != hashlib.sha256(data).hexdigest():
        raise Fail("sha256Hash does not match the bytes")
    if not (f.uri or "").endswith(f.name.split("/")[-1]):
        raise Fail(f"uri {f.uri!r} does not end with the id of {f.name!r}")
    g = fc.files.get(name=f.name)
    if g.name != f.name or int(g.size_bytes) != len(data) or g.display_name != "big":
        raise Fail(f"get returned {g}")
    names = [x.name for x in fc.files.list(config={"page_size": 2})]
    want = [x.name for x in reversed(small)] + [f.name]
    if names != want:
        raise Fail(f"list (pages of 2) gave {names}, expected {want}")
    fc.files.delete(name=f.name)
    try:
        fc.files.get(name=f.name)
    except Exception as e:  # noqa: BLE001
        if getattr(e, "code", None) != 404:
            raise Fail(f"get after delete: {type(e).__name__} {getattr(e, 'code', None)}")
    else:
        raise Fail("the deleted file is still there")
    other = make_client(api_key=f"files-other-{uuid.uuid4()}")
    if [x.name for x in other.files.list()]:
        raise Fail("another key sees these files")


def make_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says `text` (Helvetica, correct xref table)."""
    stream = f"BT /F1 18 Tf 20 100 Td ({text}) Tj ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def t_documents_in_the_prompt():
    """An uploaded text file and an uploaded PDF are read into the prompt: the prompt token
    count grows by their contents, and a broken PDF is a 400."""
    import tempfile
    fact = "The lighthouse keeper of Cape Orla is named Mirela Vasquez. " * 8
    with tempfile.TemporaryDirectory() as d:
        tp = os.path.join(d, "fact.txt")
        with open(tp, "w") as fh:
            fh.write(fact)
        pp = os.path.join(d, "secret.pdf")
        with open(pp, "wb") as fh:
            fh.write(make_pdf("The secret word is pineapple. " * 3))
        txt = client.files.upload(file=tp, config={"mime_type": "text/plain"})
        pdf = client.files.upload(file=pp, config={"mime_type": "application/pdf"})
        bad = os.path.join(d, "broken.pdf")
        with open(bad, "wb") as fh:
            fh.write(make_pdf("x")[:60])
        broken = client.files.upload(file=bad, config={"mime_type": "application/pdf"})
    q = {"type": "text", "text": "Who is the lighthouse keeper, and what is the secret word?"}
    gc = {"temperature": 0, "max_output_tokens": 24}
    base = client.interactions.create(model=MODEL, input=[q], generation_config=gc)
    it = client.interactions.create(model=MODEL, generation_config=gc, input=[
        q,
        {"type": "document", "uri": txt.uri, "mime_type": "text/plain"},
        {"type": "document", "uri": pdf.uri, "mime_type": "application/pdf"},
    ])
    grew = it.usage.total_input_tokens - base.usage.total_input_tokens
    if grew < 100:
        raise Fail(f"the prompt grew by {grew} tokens only: the documents did not reach it")
    if not model_text(it.steps).strip():
        raise Fail("no answer")
    got = client.interactions.get(it.id)
    kinds = [getattr(c, "type", None) for c in got.steps[0].content]
    if kinds != ["text", "document", "document"]:
        raise Fail(f"the stored input is not the input as sent: {kinds}")
    expect_status(lambda: client.interactions.create(model=MODEL, input=[
        q, {"type": "document", "uri": broken.uri, "mime_type": "application/pdf"}]),
        400, "BadRequestError", "a truncated PDF")
    expect_status(lambda: client.interactions.create(model=MODEL, input=[
        q, {"type": "image", "uri": txt.uri, "mime_type": "image/png"}]),
        400, "BadRequestError", "an image for a text-only model")


CHECKS = [
    ("stream_matches_get", t_stream_matches_get),
    ("store_false_empty_id", t_store_false_empty_id),
    ("store_false_not_chainable", t_store_false_not_chainable),
    ("previous_unknown_404", t_previous_unknown_404),
    ("unknown_field_400", t_unknown_field_400),
    ("delete_then_get_404", t_delete_then_get_404),
    ("max_output_tokens_incomplete", t_max_output_tokens_incomplete),
    ("seed_deterministic", t_seed_deterministic),
    ("api_key_isolation", t_api_key_isolation),
    ("v1beta_and_output_text", t_output_text_and_v1beta),
    ("fc_any_stateful", t_fc_any_stateful),
    ("fc_stateless", t_fc_stateless),
    ("fc_any_seeds_valid", t_fc_any_seeds_valid),
    ("fc_tool_choice_modes", t_fc_tool_choice_modes),
    ("fc_stream", t_fc_stream),
    ("fc_builtin_tool_400", t_fc_builtin_tool_400),
    ("json_schema_seeds", t_json_schema_seeds),
    ("json_other_forms", t_json_other_forms),
    ("background_poll", t_background_poll),
    ("background_stream_resume", t_background_stream_resume),
    ("background_cancel", t_background_cancel),
    ("files_upload_get_list_delete", t_files_upload_get_list_delete),
    ("documents_in_the_prompt", t_documents_in_the_prompt),
]


def main() -> int:
    failed = 0
    for name, fn in CHECKS:
        full = f"extra/py/{name}"
        if ONLY and not re.search(ONLY, full):
            continue
        try:
            fn()
            print(f"PASS {full}", flush=True)
        except Fail as e:
            failed += 1
            print(f"FAIL {full}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            where = [f for f in traceback.extract_tb(e.__traceback__)
                     if f.filename == os.path.abspath(__file__) or f.filename == __file__]
            at = f" at line {where[-1].lineno} ({where[-1].line.strip()[:80]})" if where else ""
            print(f"FAIL {full}: unexpected {tb[:300]}{at}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
