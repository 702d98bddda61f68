#!/usr/bin/env bash
# Idempotent installer for the localgem SDK conformance suite.
#
# Installs into ${LOCALGEM_CONFORMANCE_CACHE:-${LOCALGEM_CACHE:-$HOME/.cache/localgem}/conformance}:
#   py3/   python venv with google-genai 3.x   (default 3.4.0, override GENAI_PY3_VERSION)
#   py2/   python venv with google-genai 2.x   (default 2.34.0, override GENAI_PY2_VERSION)
#   node/  npm project with @google/genai      (default 3.1.0, override GENAI_JS_VERSION)
# and makes sure curl and jq exist (apt-get if missing; needs root).
#
# Only python3 -m venv, pip and npm are used for network access (package registries).
# Re-running is cheap: each component is skipped when the wanted version is already there.
set -euo pipefail

CACHE="${LOCALGEM_CONFORMANCE_CACHE:-${LOCALGEM_CACHE:-$HOME/.cache/localgem}/conformance}"
PY3_VER="${GENAI_PY3_VERSION:-3.4.0}"
PY2_VER="${GENAI_PY2_VERSION:-2.34.0}"
JS_VER="${GENAI_JS_VERSION:-3.1.0}"
PYTHON="${PYTHON:-python3}"

log() { printf 'setup: %s\n' "$*" >&2; }

mkdir -p "$CACHE"

# ---- system tools -----------------------------------------------------------
missing=()
for t in curl jq; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    log "ERROR: ${missing[*]} missing and not root"; exit 1
  fi
fi
# Debian's system python3 needs python3-venv for `python3 -m venv` (ensurepip).
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing python3-venv with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    log "ERROR: $PYTHON cannot create venvs (install python3-venv)"; exit 1
  fi
fi
# @google/genai 3.1.0 declares engines node >= 22 but works on Node 20 (tested).
command -v node >/dev/null || { log "ERROR: node not found (need Node >= 20)"; exit 1; }
command -v npm  >/dev/null || { log "ERROR: npm not found"; exit 1; }

# ---- python venvs -------------------------------------------------------------
py_version_in() { # $1=venv dir -> prints installed google-genai version or nothing
  [ -x "$1/bin/python" ] || return 0
  "$1/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
print(m.version("google-genai"))
PY
}

make_venv() { # $1=dir $2=version
  local dir="$1" ver="$2" have
  have="$(py_version_in "$dir")"
  if [ "$have" = "$ver" ]; then
    log "$dir: google-genai $ver already installed"
    return 0
  fi
  log "$dir: installing google-genai==$ver (had: ${have:-none})"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "google-genai==$ver"
  have="$(py_version_in "$dir")"
  [ "$have" = "$ver" ] || { log "ERROR: $dir has google-genai '$have', wanted $ver"; exit 1; }
}

make_venv "$CACHE/py3" "$PY3_VER"
make_venv "$CACHE/py2" "$PY2_VER"

# ---- npm project --------------------------------------------------------------
NODE_DIR="$CACHE/node"
mkdir -p "$NODE_DIR"
js_have=""
if [ -f "$NODE_DIR/node_modules/@google/genai/package.json" ]; then
  js_have="$(node -e 'process.stdout.write(require(process.argv[1]).version)' "$NODE_DIR/node_modules/@google/genai/package.json")"
fi
if [ "$js_have" = "$JS_VER" ]; then
  log "$NODE_DIR: @google/genai $JS_VER already installed"
else
  log "$NODE_DIR: installing @google/genai@$JS_VER (had: ${js_have:-none})"
  [ -f "$NODE_DIR/package.json" ] || printf '{\n  "name": "localgem-conformance",\n  "private": true,\n  "type": "module"\n}\n' >"$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund --save-exact "@google/genai@$JS_VER")
fi

log "ready: $CACHE (py3=$PY3_VER py2=$PY2_VER js=$JS_VER)"
