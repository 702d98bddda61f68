#!/usr/bin/env python3
"""Extract the runnable code examples from the user's seed documents.

The seeds are plain-text renderings of Google's "Text generation" guide:
prose paragraphs, then a line that says exactly ``Python``, ``JavaScript`` or
``REST`` followed by the code of that example, and so on.  The Thai seed
(002_*) keeps the code indentation (the Vietnamese one, 000_*, flattens it, so
its Python would not even parse); the Thai one is therefore the source of
truth and the Vietnamese one is only cross-checked "modulo indentation".

Parsing rules (deliberately simple and robust):
  * a line that is exactly ``Python`` / ``JavaScript`` / ``REST`` (surrounding
    whitespace ignored) starts a block of that language;
  * a *prose* line ends the current block.  A prose line is a non-blank line
    that is not indented, does not start with a comment marker (``#``, ``//``)
    and contains a non-ASCII letter (all prose in the seeds is Thai or
    Vietnamese, all code is ASCII);
  * blank lines inside a block are kept; leading/trailing blank lines of a
    block are dropped;
  * consecutive blocks with no prose in between form one example *group*
    (normally Python + JavaScript + REST); a repeated language also starts a
    new group.

Code is kept byte-for-byte.  The only edit is in REST (shell) blocks, where
the hard-coded host ``https://generativelanguage.googleapis.com`` is replaced
by ``$GOOGLE_GEMINI_BASE_URL`` (it always sits inside double quotes in the
seeds, so the variable expands).

Each group gets a stable slug derived from what its code does (not from the
localised prose), e.g. ``ex_01_basic``.  Output files in the work dir:
``<slug>.py``, ``<slug>.mjs``, ``<slug>.sh`` and ``manifest.json``.

Usage:
  extract.py [--seed-dir DIR] [--out DIR] [--list] [--strict]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import unicodedata

LANGS = {"Python": "python", "JavaScript": "javascript", "REST": "rest"}
EXT = {"python": "py", "javascript": "mjs", "rest": "sh"}
GOOGLE_HOST = "https://generativelanguage.googleapis.com"
BASE_VAR = "$GOOGLE_GEMINI_BASE_URL"

# The image example needs a model that takes images: the runner runs it against the
# vision server (and checks that the text-only server answers it with a 400).
NEEDS_VISION = "vision"

# The image example rewritten for the guide's other input modalities: the same code with an
# audio file, and with a video file, in place of the photo (run against the vision server,
# whose test projector also hears).
MEDIA = {
    "image": {"file": "path/to/organ.jpg", "mime": "image/jpeg"},
    "audio": {"file": "path/to/organ.mp3", "mime": "audio/mpeg"},
    "video": {"file": "path/to/organ.mp4", "mime": "video/mp4"},
}


def as_media(code: str, kind: str) -> str:
    """The image example's code with a `kind` file: its path, MIME type and part type."""
    m = MEDIA[kind]
    code = code.replace(MEDIA["image"]["file"], m["file"])
    code = code.replace(MEDIA["image"]["mime"], m["mime"])
    return re.sub(r'(["\']?type["\']?\s*:\s*)"image"', rf'\1"{kind}"', code)


def is_prose(line: str) -> bool:
    if not line.strip():
        return False
    if line[0] in " \t":
        return False
    s = line.lstrip()
    if s.startswith("#") or s.startswith("//"):
        return False
    return any(ord(c) > 127 and unicodedata.category(c).startswith("L") for c in line)


def parse(text: str):
    """Return a list of groups; each group is a dict with 'context' (prose
    lines before it) and 'blocks' (list of (lang, code, first_line_no))."""
    lines = text.split("\n")
    groups = []
    prose_run: list[str] = []
    cur_group = None
    cur_lang = None
    cur_lines: list[str] = []
    cur_start = 0

    def close_block():
        nonlocal cur_lang, cur_lines
        if cur_lang is None:
            return
        body = list(cur_lines)
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        cur_group["blocks"].append((cur_lang, "\n".join(body) + "\n", cur_start))
        cur_lang, cur_lines = None, []

    for no, line in enumerate(lines, 1):
        marker = LANGS.get(line.strip())
        if marker is not None:
            close_block()
            langs_in_group = {b[0] for b in cur_group["blocks"]} if cur_group else set()
            if cur_group is None or prose_run or marker in langs_in_group:
                cur_group = {"context": prose_run, "blocks": []}
                groups.append(cur_group)
                prose_run = []
            cur_lang, cur_lines, cur_start = marker, [], no + 1
            continue
        if is_prose(line):
            close_block()
            prose_run.append(line.strip())
            continue
        if cur_lang is not None:
            cur_lines.append(line)
        # ASCII lines outside any block (none in the seeds) are ignored.
    close_block()
    return [g for g in groups if g["blocks"]]


def slug_for(blocks) -> str:
    code = "\n".join(c for _, c, _ in blocks)
    if "files.upload" in code or "organ.jpg" in code or "YOUR_FILE_URI" in code:
        return "multimodal_image"
    stream = bool(re.search(r"stream\s*[=:]\s*(True|true)|\"stream\":\s*true", code))
    if re.search(r"store\s*[=:]\s*(False|false)|\"store\":\s*false", code):
        return "stateless_history"
    if "previous_interaction_id" in code:
        return "multiturn_stream" if stream else "multiturn"
    if stream:
        return "stream"
    if "thinking_level" in code:
        return "thinking"
    if "system_instruction" in code:
        return "system_instruction"
    if "temperature" in code or "generation_config" in code:
        return "generation_config"
    return "basic"


def section_title(context: list[str]) -> str:
    # The heading is the first short prose line before the example; fall back
    # to the first prose line (a paragraph) when there is none.
    for line in context:
        if len(line) <= 40:
            return line
    return context[0] if context else ""


def normalise(code: str) -> list[str]:
    # "modulo indentation": drop leading whitespace and blank lines
    return [l.strip() for l in code.split("\n") if l.strip()]


def find_seed(seed_dir: str, prefix: str) -> str | None:
    hits = sorted(glob.glob(os.path.join(seed_dir, prefix + "*.txt")))
    return hits[0] if hits else None


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_seeds = os.environ.get("LOCALGEM_SEED_DIR") or os.path.normpath(
        os.path.join(here, "..", "..", "..", "shared", "seeds"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed-dir", default=default_seeds)
    ap.add_argument("--seed", help="primary seed file (default: 002_* in --seed-dir)")
    ap.add_argument("--check-seed", help="seed to cross-check (default: 000_* in --seed-dir)")
    ap.add_argument("--out", help="work dir to write the example files into")
    ap.add_argument("--list", action="store_true", help="print the examples found")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if the cross-check seed differs")
    a = ap.parse_args()

    seed = a.seed or find_seed(a.seed_dir, "002_")
    if not seed:
        print(f"extract: no primary seed (002_*.txt) in {a.seed_dir}", file=sys.stderr)
        return 2
    with open(seed, encoding="utf-8") as f:
        groups = parse(f.read())
    if not groups:
        print(f"extract: no examples found in {seed}", file=sys.stderr)
        return 2

    examples = []
    used: dict[str, int] = {}
    for gi, g in enumerate(groups, 1):
        base = slug_for(g["blocks"])
        used[base] = used.get(base, 0) + 1
        slug = base if used[base] == 1 else f"{base}_{used[base]}"
        name = f"ex_{gi:02d}_{slug}"
        needs = NEEDS_VISION if base == "multimodal_image" else None
        kinds = list(MEDIA) if needs else [None]
        for kind in kinds:
            vname = name if kind in (None, "image") else name.replace("_image", f"_{kind}")
            for lang, code, line_no in g["blocks"]:
                if lang == "rest":
                    code = code.replace(GOOGLE_HOST, BASE_VAR)
                if kind:
                    code = as_media(code, kind)
                examples.append({
                    "name": vname, "group": gi, "slug": slug, "language": lang,
                    "section": section_title(g["context"]),
                    "seed": os.path.basename(seed), "seed_line": line_no,
                    "file": f"{vname}.{EXT[lang]}", "skip": None, "needs": needs,
                    "media": dict(MEDIA[kind], kind=kind) if kind else None, "code": code,
                })

    # Cross-check the other translation (cheap; warning unless --strict).
    rc = 0
    other = a.check_seed or find_seed(a.seed_dir, "000_")
    if other and os.path.abspath(other) != os.path.abspath(seed):
        with open(other, encoding="utf-8") as f:
            ogroups = parse(f.read())
        mine = [(l, normalise(c)) for g in groups for l, c, _ in g["blocks"]]
        theirs = [(l, normalise(c)) for g in ogroups for l, c, _ in g["blocks"]]
        if mine == theirs:
            print(f"extract: {os.path.basename(other)} holds the same {len(mine)} examples "
                  "(modulo indentation)", file=sys.stderr)
        else:
            print(f"extract: WARNING: {os.path.basename(other)} differs from "
                  f"{os.path.basename(seed)} ({len(theirs)} vs {len(mine)} blocks)",
                  file=sys.stderr)
            for i, (m, t) in enumerate(zip(mine, theirs)):
                if m != t:
                    print(f"extract:   first difference in block {i + 1} ({m[0]}/{t[0]})",
                          file=sys.stderr)
                    break
            if a.strict:
                rc = 1

    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for ex in examples:
            with open(os.path.join(a.out, ex["file"]), "w", encoding="utf-8", newline="") as f:
                f.write(ex["code"])
        with open(os.path.join(a.out, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump([{k: v for k, v in ex.items() if k != "code"} for ex in examples],
                      f, ensure_ascii=False, indent=1)
    if a.list or not a.out:
        for ex in examples:
            flag = f"  [needs: {ex['needs']}]" if ex["needs"] else ""
            print(f"{ex['file']:36s} {ex['language']:10s} line {ex['seed_line']:4d}  "
                  f"{ex['section'][:40]}{flag}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
