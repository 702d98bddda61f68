"""The playground in headless Chromium against a live localgem (see run.sh)."""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHOTS = os.environ["PLAYGROUND_SHOTS"]
IMAGE = os.path.join(REPO, "tests", "fixtures", "organ.jpg")
KEY = "playground-test-key"
passed, failed = [], []


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def api(base, path):
    req = urllib.request.Request(base + path, headers={"x-goog-api-key": KEY})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


class Page:
    def __init__(self, base):
        self.base = base
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                  "--disable-dev-shm-usage",
                  # Nothing but localgem resolves: the page must need nothing else.
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:
            opts.add_argument(a)
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.d.get(base + "/")
        self.d.execute_script("localStorage.setItem('localgem.key', arguments[0])", KEY)
        self.d.get(base + "/")
        self.until(lambda: self.js("return document.querySelectorAll('#model option').length") > 0, "models listed")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def until(self, cond, what, timeout=240):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if cond():
                    return
            except Exception:  # noqa: BLE001 - the page may be reloading
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for: {what}")

    def shot(self, name):
        self.d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def set(self, el_id, value):
        el = self.d.find_element(By.ID, el_id)
        el.clear()
        if value != "":
            el.send_keys(str(value))

    def send(self, text):
        box = self.d.find_element(By.ID, "prompt")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def turns(self):
        return self.js("return window.playground.state.turns.length")

    def status(self, n):
        return self.js(f"return document.querySelector('[data-turn=\"{n}\"]')?.dataset.status || ''")

    def answer(self, n):
        return self.js(f"return document.querySelector('[data-turn=\"{n}\"] .answer')?.textContent || ''")

    def done(self, n, timeout=240):
        self.until(lambda: self.status(n) in ("completed", "incomplete", "requires_action", "failed", "cancelled"),
                   f"turn {n} to end", timeout)
        return self.status(n)


def check(name, fn):
    t = time.time()
    try:
        note = fn()
        passed.append(name)
        print(f"PASS {name} ({time.time() - t:.1f} s){': ' + note if note else ''}", flush=True)
    except Exception as e:  # noqa: BLE001
        failed.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {str(e)[:400]}", flush=True)


def main():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="localgem-playground-data.")
    log = open(os.path.join(SHOTS, "server.log"), "w")
    server = subprocess.Popen(
        [os.environ["LOCALGEM_BIN"], "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data,
         *(["--models-dir", os.environ["LOCALGEM_MODELS_DIR"]] if os.environ.get("LOCALGEM_MODELS_DIR") else []),
         *shlex.split(os.environ["LOCALGEM_VISION_ARGS"])], stdout=log, stderr=subprocess.STDOUT)
    page = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except Exception:  # noqa: BLE001
                time.sleep(1)
        page = Page(base)
        run(page, base)
    finally:
        if page:
            page.d.quit()
        server.terminate()
        server.wait(timeout=30)
    print(f"# screenshots in {SHOTS}")
    print(f"playground: {len(passed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


def run(p, base):
    p.set("max-tokens", 60)
    p.set("temperature", 0)
    p.shot("01-loaded")

    def streamed():
        p.send("Say hello in five words.")
        lengths = set()
        p.until(lambda: lengths.add(len(p.answer(0))) or p.status(0) not in ("", "in_progress"), "first answer")
        status = p.done(0)
        assert status in ("completed", "incomplete"), status
        text = p.answer(0)
        seen = sorted(n for n in lengths if 0 < n < len(text))
        assert text.strip(), "empty answer"
        assert seen, f"the answer never showed part-way (lengths seen {sorted(lengths)})"
        stats = p.js("return document.querySelector('[data-turn=\"0\"] .stats').textContent")
        assert "TTFT" in stats and "tokens/s" in stats and "cached" in stats, stats
        p.shot("02-streamed")
        return f"{len(seen)} partial renders before the end; {stats}"
    check("a prompt gets a streamed answer with TTFT, tokens/s and cached tokens", streamed)

    def continued():
        p.send("And in French?")
        p.done(1)
        first, second = p.js("return window.playground.state.turns.map(t => t.id)")
        req = p.js("return window.playground.requests[1]")
        assert req["previous_interaction_id"] == first, req
        stored = api(base, f"/v1beta/interactions/{second}")
        assert stored["previous_interaction_id"] == first, stored
        p.shot("03-continued")
        return f"turn 2 carried previous_interaction_id {first}"
    check("continuing sends previous_interaction_id", continued)

    def image():
        p.d.find_element(By.ID, "file").send_keys(IMAGE)
        p.until(lambda: "organ.jpg" in p.js("return document.getElementById('attachments').textContent"), "upload")
        p.send("Describe this image.")
        n = p.turns() - 1
        p.done(n)
        assert p.js(f"return !!document.querySelector('[data-turn=\"{n}\"] .user img')"), "no thumbnail"
        it = api(base, f"/v1beta/interactions/{p.js(f'return window.playground.state.turns[{n}].id')}")
        kinds = [c["type"] for s in it["steps"] if s["type"] == "user_input" for c in s["content"]]
        assert "image" in kinds, kinds
        mods = {m["modality"]: m["tokens"] for m in it["usage"]["input_tokens_by_modality"]}
        assert mods.get("image", 0) > 0, mods
        p.shot("04-image")
        return f"{mods['image']} image tokens"
    check("an image uploaded through the Files API reaches the vision model", image)

    def audio():
        tone = os.path.join(SHOTS, "tone.wav")
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                        "sine=frequency=440:duration=2", tone], check=True)
        p.d.find_element(By.ID, "file").send_keys(tone)
        p.until(lambda: "tone.wav" in p.js("return document.getElementById('attachments').textContent"), "upload")
        p.send("What do you hear?")
        n = p.turns() - 1
        p.done(n)
        user = p.js(f"return document.querySelector('[data-turn=\"{n}\"] .user').innerHTML")
        assert "<audio" in user, f"no player: {user}"
        it = api(base, f"/v1beta/interactions/{p.js(f'return window.playground.state.turns[{n}].id')}")
        kinds = [c["type"] for s in it["steps"] if s["type"] == "user_input" for c in s["content"]]
        assert "audio" in kinds, kinds
        mods = {m["modality"]: m["tokens"] for m in it["usage"]["input_tokens_by_modality"]}
        assert mods.get("audio", 0) > 0, mods
        p.shot("04b-audio")
        return f"{mods['audio']} audio tokens"
    check("an audio file uploaded through the Files API reaches the audio encoder", audio)

    def stop():
        p.set("max-tokens", 2000)
        p.send("Write a very long story about the sea.")
        n = p.turns() - 1
        p.until(lambda: len(p.answer(n)) > 20, "the long answer to start")
        p.d.find_element(By.ID, "stop").click()
        p.until(lambda: p.status(n) == "cancelled", "cancelled")
        it = api(base, f"/v1beta/interactions/{p.js(f'return window.playground.state.turns[{n}].id')}")
        assert it["status"] == "cancelled", it["status"]
        p.shot("05-stopped")
        return f"stopped after {it['usage']['total_output_tokens']} tokens"
    check("Stop cancels a long answer", stop)

    def reload():
        p.set("max-tokens", 300)
        p.send("Write a long story about a cat.")
        n = p.turns() - 1
        p.until(lambda: len(p.answer(n)) > 20, "the answer to start")
        before = len(p.answer(n))
        p.d.refresh()
        p.until(lambda: p.status(n) in ("completed", "incomplete"), "the resumed answer to end")
        turn = p.js(f"return window.playground.state.turns[{n}]")
        assert turn.get("resumed"), "the page did not attach to the running answer"
        it = api(base, f"/v1beta/interactions/{turn['id']}")
        stored = "".join(c.get("text", "") for s in it["steps"] if s["type"] == "model_output" for c in s["content"])
        shown = p.answer(n)
        assert shown == stored, f"shown {shown[:80]!r}… != stored {stored[:80]!r}…"
        p.shot("06-resumed")
        return f"reloaded at {before} characters; resumed to {len(shown)}, the stored answer"
    check("a reload mid-stream resumes the answer (last_event_id)", reload)

    def stateless():
        p.d.find_element(By.ID, "new-chat").click()
        p.set("max-tokens", 40)
        p.d.find_element(By.ID, "stateless").click()
        p.send("I have 2 dogs in my house.")
        p.done(0)
        p.send("How many paws are in my house?")
        p.done(1)
        req = p.js("return window.playground.requests.at(-1)")
        assert req["store"] is False and "previous_interaction_id" not in req, req
        kinds = [s["type"] for s in req["input"]]
        assert kinds[:2] == ["user_input", "model_output"] and kinds[-1] == "user_input", kinds
        assert p.js("return window.playground.state.turns.map(t => t.id)") == ["", ""]
        p.shot("07-stateless")
        p.d.find_element(By.ID, "stateless").click()
        return f"the second request resent {len(kinds)} steps"
    check("stateless mode resends the history as steps with store: false", stateless)

    def tools_and_schema():
        p.d.find_element(By.ID, "new-chat").click()
        p.set("max-tokens", 60)
        p.set("tools", json.dumps([{"type": "function", "name": "get_weather", "description": "Weather of a city",
                                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                   "required": ["city"]}}]))
        p.d.execute_script("document.getElementById('tool-choice').value = 'any'")
        p.send("What is the weather in Paris?")
        assert p.done(0) == "requires_action", p.status(0)
        box = p.d.find_element(By.CSS_SELECTOR, '[data-turn="0"] .call input')
        name = p.js("return document.querySelector('[data-turn=\"0\"] .call').textContent")
        assert name.startswith("get_weather("), name
        p.shot("08-function-call")
        p.d.execute_script("document.getElementById('tool-choice').value = 'none'")
        box.send_keys('{"weather": "sunny"}')
        box.send_keys(Keys.ENTER)
        p.done(1)
        req = p.js("return window.playground.requests.at(-1)")
        assert req["input"][0]["type"] == "function_result" and req["input"][0]["result"] == {"weather": "sunny"}, req
        assert req["previous_interaction_id"] == p.js("return window.playground.state.turns[0].id"), req
        # JSON-schema output.
        p.set("tools", "")
        p.d.execute_script("document.getElementById('tool-choice').value = ''")
        p.set("schema", json.dumps({"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                                    "required": ["city"]}))
        p.send("Name a city.")
        n = p.turns() - 1
        p.done(n)
        v = json.loads(p.answer(n))
        assert isinstance(v.get("city"), str), v
        p.set("schema", "")
        p.shot("09-json")
        return f"a call with a typed result, then {v}"
    check("function calls take a typed result; a JSON schema shapes the answer", tools_and_schema)

    def code():
        p.d.find_element(By.CSS_SELECTOR, "#code-panel summary").click()
        py = p.js("return document.getElementById('code').textContent")
        last = p.js("return window.playground.requests.at(-1)")
        assert "client.interactions.create(" in py and f'previous_interaction_id="{last["previous_interaction_id"]}"' in py, py
        assert "response_format=" in py and '"maxLength": 20' in py, py
        p.d.find_element(By.CSS_SELECTOR, ".tabs [data-lang=curl]").click()
        curl = p.js("return document.getElementById('code').textContent")
        assert curl.startswith("curl -X POST") and json.loads(curl.split("-d '", 1)[1].rstrip().rstrip("'")) == last, curl
        p.d.find_element(By.CSS_SELECTOR, ".tabs [data-lang=javascript]").click()
        js = p.js("return document.getElementById('code').textContent")
        assert "ai.interactions.create(" in js, js
        p.shot("10-code")
    check("copy as code: Python, JavaScript and curl of the last request", code)

    def error():
        p.set("temperature", 5)
        p.send("Hello")
        p.until(lambda: not p.js("return document.getElementById('error').hidden"), "the error")
        msg = p.js("return document.getElementById('error').textContent")
        assert msg.startswith("400") and "temperature" in msg, msg
        p.set("temperature", 0)
        p.shot("11-error")
        return msg
    check("a 400 is shown as the server wrote it", error)

    def phone():
        p.d.set_window_size(390, 844)
        time.sleep(0.3)
        over = p.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert over <= 0, f"{over}px wider than the window"
        p.shot("12-phone")
        p.d.find_element(By.ID, "toggle-settings").click()
        assert p.d.find_element(By.ID, "settings").is_displayed()
        p.shot("13-phone-settings")
        p.d.find_element(By.ID, "toggle-settings").click()
        p.d.set_window_size(1280, 900)
    check("a phone-sized window has no sideways scrolling", phone)

    def offline():
        urls = p.js("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        # (blob: URLs are the page's own thumbnails of files it uploaded.)
        others = [u for u in urls if not (u.startswith(base) or u.startswith("blob:" + base))]
        assert not others, others
        return f"{len(urls)} requests, all to localgem"
    check("the page loads nothing but localgem", offline)


if __name__ == "__main__":
    main()
