#!/usr/bin/env bash
# gemini-cli (npm) in non-interactive mode against localgem: a prompt, and a task that makes
# it run one of its tools (read_file) and answer with the result. Only the base URL and a
# key are set, plus the settings any offline user needs: API-key auth chosen (with
# GOOGLE_GEMINI_BASE_URL set, gemini-cli otherwise picks a "gateway" auth that `-p` refuses),
# no usage statistics, no telemetry.
#
# A model this small does not choose tools by itself, so the task runs under a model alias
# of gemini-cli's own settings (modelConfigs.customAliases) whose first request sets
# toolConfig mode ANY with allowedFunctionNames [read_file] and temperature 0; gemini-cli
# sends its follow-up (the tool's result) under the plain model's config, where the model
# answers freely.
#
# Needs GEMINI_CLI (the gemini binary) and GOOGLE_GEMINI_BASE_URL. Prints PASS/FAIL lines.
set -uo pipefail
: "${GEMINI_CLI:?}" "${GOOGLE_GEMINI_BASE_URL:?}"
ONLY="${CLIENTS_ONLY:-}"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/home/.gemini" "$D/work"
echo "The secret word is pelican." >"$D/work/notes.txt"
cat >"$D/home/.gemini/settings.json" <<'JSON'
{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false },
  "ide": { "enabled": false },
  "tools": { "useRipgrep": false },
  "model": { "maxSessionTurns": 6 },
  "modelConfigs": { "customAliases": {
    "read-a-file": { "extends": "chat-base", "modelConfig": { "model": "gemini-2.5-flash",
      "generateContentConfig": { "temperature": 0, "maxOutputTokens": 64,
        "toolConfig": { "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["read_file"] } } } } },
    "gemini-2.5-flash": { "extends": "chat-base", "modelConfig": { "model": "gemini-2.5-flash",
      "generateContentConfig": { "temperature": 0, "maxOutputTokens": 48 } } } } }
}
JSON
failed=0

# $1 name, $2 model; the rest: the prompt. Leaves gemini's JSON output in $D/out.
gemini() {
  local name="$1" model="$2"; shift 2
  (cd "$D/work" && env -i PATH="$PATH" HOME="$D/home" TERM=dumb \
      GOOGLE_GEMINI_BASE_URL="$GOOGLE_GEMINI_BASE_URL" GEMINI_API_KEY=anything \
      GEMINI_CLI_TRUST_WORKSPACE=true GEMINI_CLI_NO_RELAUNCH=1 \
      timeout 600 "$GEMINI_CLI" -m "$model" -o json -p "$*" </dev/null >"$D/out" 2>"$D/$name.err")
}

result() { # $1 name, $2 python expression over d (the JSON output) that must be true
  local name="clients/gemini-cli/$1"
  if python3 -c "import json,sys; d=json.load(open('$D/out')); sys.exit(0 if ($2) else 1)" 2>/dev/null; then
    echo "PASS $name"
  else
    echo "FAIL $name: $(head -c 400 "$D/out" | tr '\n' ' ') $(tail -c 300 "$D/$1.err" | tr '\n' ' ')"
    failed=1
  fi
}

if [ -z "$ONLY" ] || [[ clients/gemini-cli/prompt =~ $ONLY ]]; then
  gemini prompt gemini-2.5-flash "Say hello."
  result prompt "d.get('response','').strip() and 'error' not in d \
    and d['stats']['models']['gemini-2.5-flash']['tokens']['prompt'] > 1000"
fi

if [ -z "$ONLY" ] || [[ clients/gemini-cli/tool_task =~ $ONLY ]]; then
  gemini tool_task read-a-file "Read the file notes.txt and tell me the secret word."
  # read_file ran and succeeded, and the model answered after seeing its result (two
  # requests; the second one reuses the first one's KV state).
  result tool_task "d['stats']['tools']['byName'].get('read_file',{}).get('success',0) >= 1 \
    and d.get('response','').strip() and 'error' not in d \
    and d['stats']['models']['gemini-2.5-flash']['api']['totalRequests'] >= 2 \
    and d['stats']['models']['gemini-2.5-flash']['tokens']['cached'] > 1000"
fi
exit "$failed"
