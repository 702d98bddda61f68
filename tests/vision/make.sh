#!/usr/bin/env bash
# Make the test vision pairs: a small random projector (make_mmproj.py) for each bundled text
# model, written with the `gguf` package in a venv of its own. gemma-3-270m with its
# projector (a vision and an audio encoder) is Gemma-3-shaped throughout and is what the seed
# examples, and their audio and video versions, run against;
# smollm2-135m gets one too, because its batched computation is bit-identical to a
# sequential one, which lets a test check that images batch exactly. Prints the gemma-3-270m
# projector's path. Idempotent: projectors made by the same script are kept.
#
#   bash tests/vision/make.sh            # needs both bundled models pulled
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
MODELS="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
OUT_DIR="$MODELS/test-vision"
VENV="$CACHE/vision-venv"
stamp="$(sha256sum "$HERE/make_mmproj.py" | cut -c1-16)"

make_one() { # text model file, projector id[, --audio]
  local text="$MODELS/$1" out="$OUT_DIR/mmproj-$2-test.gguf"
  [ -f "$text" ] || { echo "make.sh: $text missing (localgem models pull $2)" >&2; exit 2; }
  if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  if ! "$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "gguf==0.19.0" "numpy<3" >&2
  fi
  mkdir -p "$OUT_DIR"
  "$VENV/bin/python" "$HERE/make_mmproj.py" ${3:-} "$text" "$out.tmp" >&2
  mv "$out.tmp" "$out"
  echo "$stamp" > "$out.stamp"
}

make_one gemma-3-270m-q4_k_m.gguf gemma-3-270m --audio
# smollm2-135m's takes images only: a model with a projector but no audio encoder.
make_one SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m
echo "$OUT_DIR/mmproj-gemma-3-270m-test.gguf"
