#!/usr/bin/env bash
# Installs the third-party clients the clients suite runs, pinned, into
# ${LOCALGEM_CACHE:-~/.cache/localgem}/clients (idempotent): a Python venv `py` with
# LangChain's Gemini chat model, Google's ADK and pydantic-ai, and an npm project `node`
# with gemini-cli. Everything comes from the package registries.
set -euo pipefail
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}/clients"
PY_PKGS=(langchain-google-genai==4.4.3 langchain-core==1.8.3 google-adk==2.13.0
         "pydantic-ai-slim[google]==2.68.0" google-genai==2.34.0)
GEMINI_CLI=@google/gemini-cli@0.61.0
mkdir -p "$CACHE"
stamp="$CACHE/py/.installed"
want="${PY_PKGS[*]}"
if [ ! -x "$CACHE/py/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$CACHE/py"
  "$CACHE/py/bin/pip" install -q --upgrade pip >/dev/null
  "$CACHE/py/bin/pip" install -q "${PY_PKGS[@]}"
  echo "$want" >"$stamp"
fi
if [ ! -x "$CACHE/node/node_modules/.bin/gemini" ] || [ "$(cat "$CACHE/node/.installed" 2>/dev/null)" != "$GEMINI_CLI" ]; then
  mkdir -p "$CACHE/node"
  (cd "$CACHE/node" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent --no-audit --no-fund "$GEMINI_CLI" >/dev/null)
  echo "$GEMINI_CLI" >"$CACHE/node/.installed"
fi
