#!/usr/bin/env bash
# Make the test vision pair: the bundled gemma-3-270m text model and a small random
# Gemma-3-shaped projector for it (make_mmproj.py), written with the `gguf` package in a
# venv of its own. Prints the projector's path. Idempotent: an existing projector made by
# the same script is kept.
#
#   bash tests/vision/make.sh            # needs the gemma-3-270m model pulled
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
MODELS="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
TEXT="$MODELS/gemma-3-270m-q4_k_m.gguf"
OUT_DIR="$MODELS/test-vision"
OUT="$OUT_DIR/mmproj-gemma-3-270m-test.gguf"
VENV="$CACHE/vision-venv"

[ -f "$TEXT" ] || { echo "make.sh: $TEXT missing (localgem models pull gemma-3-270m)" >&2; exit 2; }
stamp="$(sha256sum "$HERE/make_mmproj.py" | cut -c1-16)"
if [ -f "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$OUT"
  exit 0
fi
if ! "$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "gguf==0.19.0" "numpy<3" >&2
fi
mkdir -p "$OUT_DIR"
"$VENV/bin/python" "$HERE/make_mmproj.py" "$TEXT" "$OUT.tmp" >&2
mv "$OUT.tmp" "$OUT"
echo "$stamp" > "$OUT.stamp"
echo "$OUT"
