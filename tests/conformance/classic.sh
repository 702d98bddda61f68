#!/usr/bin/env bash
# The REST examples of the Gemini API's text-generation quickstart (generateContent) with
# curl against a live localgem, as the docs write them (snake_case and camelCase mixed, the
# key in x-goog-api-key) with the host replaced by $GOOGLE_GEMINI_BASE_URL.
#
# Needs GOOGLE_GEMINI_BASE_URL, GEMINI_API_KEY, curl and jq; CONFORMANCE_VISION_URL and
# CONFORMANCE_IMAGE for the inline image example (and organ.mp3 next to it for the inline
# audio one). Prints "PASS classic/rest/<name>" or
# "FAIL classic/rest/<name>: reason"; exits 1 if any failed.
set -uo pipefail
BASE="${GOOGLE_GEMINI_BASE_URL:?}"
ONLY="${CONFORMANCE_ONLY:-}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
failed=0

# $1 name, $2 jq filter that must print "true" for the saved body ($OUT/body), after the
# request was made by the rest of the arguments (curl options).
example() {
  local name="classic/rest/$1" filter="$2"; shift 2
  if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi
  local code
  code="$(curl -sS -o "$OUT/body" -w '%{http_code}' "$@")" || code="curl-failed"
  if [ "$(jq -r "$filter" "$OUT/body" 2>/dev/null)" = "true" ]; then
    echo "PASS $name"
  else
    echo "FAIL $name: HTTP $code, body $(head -c 300 "$OUT/body" | tr '\n' ' ')"
    failed=1
  fi
}

TEXT='(.candidates[0].content.parts | map(select(.thought != true) | .text // "") | join("") | length > 0)'

example generate_content "$TEXT and .usageMetadata.promptTokenCount > 0" \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -X POST \
  -d '{
    "contents": [
      {
        "parts": [
          {
            "text": "Explain how AI works in a few words"
          }
        ]
      }
    ]
  }'

example thinking_off "$TEXT and (.usageMetadata.thoughtsTokenCount // 0) == 0" \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -X POST \
  -d '{
    "contents": [
      {
        "parts": [
          {
            "text": "Explain how AI works in a few words"
          }
        ]
      }
    ],
    "generationConfig": {
      "thinkingConfig": {
        "thinkingBudget": 0
      }
    }
  }'

example system_instruction "$TEXT" \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -d '{
    "system_instruction": {
      "parts": [
        {
          "text": "You are a cat. Your name is Neko."
        }
      ]
    },
    "contents": [
      {
        "parts": [
          {
            "text": "Hello there"
          }
        ]
      }
    ]
  }'

example generation_config "$TEXT and (.candidates[0].content.parts[0].text | contains(\"Title\") | not)" \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -X POST \
  -d '{
    "contents": [
      {
        "parts": [
          {
            "text": "Explain how AI works"
          }
        ]
      }
    ],
    "generationConfig": {
      "stopSequences": [
        "Title"
      ],
      "temperature": 1.0,
      "topP": 0.8,
      "topK": 10
    }
  }'

example multi_turn "$TEXT and .candidates[0].content.role == \"model\"" \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -X POST \
  -d '{
    "contents": [
      {
        "role": "user",
        "parts": [
          {
            "text": "Hello"
          }
        ]
      },
      {
        "role": "model",
        "parts": [
          {
            "text": "Great to meet you. What would you like to know?"
          }
        ]
      },
      {
        "role": "user",
        "parts": [
          {
            "text": "I have two dogs in my house. How many paws are in my house?"
          }
        ]
      }
    ]
  }'

example count_tokens '.totalTokens > 0' \
  "$BASE/v1beta/models/gemini-2.5-flash:countTokens" \
  -H "x-goog-api-key: $GEMINI_API_KEY" \
  -H 'Content-Type: application/json' \
  -X POST \
  -d '{
    "contents": [{
      "parts":[{
        "text": "The quick brown fox jumps over the lazy dog."
        }],
      }],
    }'

# Streaming: the SSE body, turned into a JSON array of its data lines for the filter.
name=classic/rest/stream
if [ -z "$ONLY" ] || [[ "$name" =~ $ONLY ]]; then
  curl -sS "$BASE/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" \
    -H "x-goog-api-key: $GEMINI_API_KEY" \
    -H 'Content-Type: application/json' \
    --no-buffer \
    -d '{
      "contents": [
        {
          "parts": [
            {
              "text": "Explain how AI works"
            }
          ]
        }
      ]
    }' >"$OUT/sse"
  sed -n 's/^data: //p' "$OUT/sse" | jq -s . >"$OUT/chunks" 2>/dev/null
  if [ "$(jq -r 'length > 1 and (map(.candidates[0].content.parts[0].text // "") | join("") | length > 0)
                 and (last | .candidates[0].finishReason != null and .usageMetadata.totalTokenCount > 0)' \
          "$OUT/chunks" 2>/dev/null)" = true ]; then
    echo "PASS $name"
  else
    echo "FAIL $name: $(head -c 300 "$OUT/sse" | tr '\n' ' ')"
    failed=1
  fi
fi

# An inline image (base64), as the docs send it: to the vision server it is described; a
# text-only model answers 400.
if [ -n "${CONFORMANCE_IMAGE:-}" ]; then
  IMG_B64="$(base64 -w0 "$CONFORMANCE_IMAGE")"
  printf '{"contents":[{"parts":[{"inline_data":{"mime_type":"image/jpeg","data":"%s"}},{"text":"Caption this image."}]}]}' \
    "$IMG_B64" >"$OUT/image.json"
  if [ -n "${CONFORMANCE_VISION_URL:-}" ]; then
    example inline_image "$TEXT and (.usageMetadata.promptTokensDetails | map(select(.modality == \"IMAGE\")) | length == 1)" \
      "${CONFORMANCE_VISION_URL%/}/v1beta/models/gemini-2.5-flash:generateContent" \
      -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -X POST -d "@$OUT/image.json"
  fi
  example inline_image_text_model '.error.code == 400 and .error.status == "INVALID_ARGUMENT" and (.error.message | contains("image"))' \
    "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
    -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -X POST -d "@$OUT/image.json"
  # Inline audio (the organ chord next to the photo), likewise.
  AUDIO_FILE="$(dirname "$CONFORMANCE_IMAGE")/organ.mp3"
  printf '{"contents":[{"parts":[{"text":"Please describe this file."},{"inline_data":{"mime_type":"audio/mp3","data":"%s"}}]}]}' \
    "$(base64 -w0 "$AUDIO_FILE")" >"$OUT/audio.json"
  if [ -n "${CONFORMANCE_VISION_URL:-}" ]; then
    example inline_audio "$TEXT and (.usageMetadata.promptTokensDetails | map(select(.modality == \"AUDIO\")) | length == 1)" \
      "${CONFORMANCE_VISION_URL%/}/v1beta/models/gemini-2.5-flash:generateContent" \
      -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -X POST -d "@$OUT/audio.json"
  fi
  example inline_audio_text_model '.error.code == 400 and (.error.message | contains("cannot take audio input"))' \
    "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
    -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -X POST -d "@$OUT/audio.json"
fi

example bad_request '.error.code == 400 and .error.status == "INVALID_ARGUMENT"' \
  "$BASE/v1beta/models/gemini-2.5-flash:generateContent" \
  -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -X POST \
  -d '{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 3}}'

exit "$failed"
