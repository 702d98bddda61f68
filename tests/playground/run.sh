#!/usr/bin/env bash
# The playground (GET /) driven in headless Chromium (Debian's chromium and chromedriver,
# through Selenium from PyPI) against a live localgem serving the test vision model: a
# streamed answer, a continued chain, an image and an audio upload, stop, reload mid-stream and resume,
# stateless mode, copy as code, a 400 shown as the server wrote it, a phone-sized window, and
# no request to anything but localgem. Screenshots of each state go to PLAYGROUND_SHOTS
# (default: a temp dir that is kept and named at the end).
#
#   bash tests/playground/run.sh
#
# Environment: LOCALGEM_BIN, LOCALGEM_MODELS_DIR, PLAYGROUND_SHOTS.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
BIN="${LOCALGEM_BIN:?set LOCALGEM_BIN to the localgem binary}"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
VENV="$CACHE/playground-venv"
SELENIUM=selenium==4.51.0
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$SELENIUM" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$SELENIUM"
  echo "$SELENIUM" >"$VENV/.installed"
fi
MMPROJ="$(bash "$REPO/tests/vision/make.sh")"
export PLAYGROUND_SHOTS="${PLAYGROUND_SHOTS:-$(mktemp -d /tmp/localgem-playground.XXXXXX)}"
mkdir -p "$PLAYGROUND_SHOTS"
export LOCALGEM_VISION_ARGS="--model gemma-3-270m --mmproj gemma-3-270m=$MMPROJ"
exec timeout "${PLAYGROUND_TIMEOUT:-900}" "$VENV/bin/python" "$HERE/playground.py"
