#!/usr/bin/env bash
# The scale test: PostgreSQL (a throwaway cluster from Debian's packages), two localgem
# replicas sharing it and one files/KV directory, and HAProxy with deploy/haproxy.cfg, all
# started by tests/scale/scale.py against SmolLM2-135M (one llama.cpp thread per replica).
#
#   bash tests/scale/run.sh           the checks
#   bash tests/scale/run.sh --bench   the scale benchmark (BENCHMARKS.md)
#
# Needs LOCALGEM_BIN and LOCALGEM_MODELS_DIR (scripts/test.sh sets them) and the conformance
# SDKs (tests/conformance/setup.sh) for the seed examples.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export LOCALGEM_BIN="${LOCALGEM_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/localgem}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export LOCALGEM_CONFORMANCE_CACHE="${LOCALGEM_CONFORMANCE_CACHE:-$CACHE/conformance}"
[ -x "$LOCALGEM_CONFORMANCE_CACHE/py3/bin/python" ] || bash "$REPO/tests/conformance/setup.sh" >&2
# Bounded: the whole step, however it goes.
exec timeout "${SCALE_TIMEOUT:-1500}" python3 "$HERE/scale.py" "$@"
