"""PASS/FAIL reporting shared by the clients' check scripts."""
import os
import re
import traceback


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def run(client: str, checks) -> int:
    only = os.environ.get("CLIENTS_ONLY", "")
    failed = 0
    for name, fn in checks:
        full = f"clients/{client}/{name}"
        if only and not re.search(only, full):
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
            print(f"FAIL {full}: unexpected {tb[:400]}", flush=True)
    return 1 if failed else 0
