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

import os
import re
import sys
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
    if final_status != "completed":
        raise Fail(f"interaction.completed status is {final_status!r}")
    got = client.interactions.get(iid)
    stored = model_text(got.steps)
    if stored != text:
        raise Fail(f"streamed text != GET text: {text[:80]!r} vs {stored[:80]!r}")
    if got.status != "completed":
        raise Fail(f"GET status is {got.status!r}")
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
