#!/usr/bin/env bash
# Reads one secret from a keyturn SecretEndpoint with a client certificate, for macOS and
# Linux. Prints the secret's value on stdout and nothing else; errors go to stderr with
# keyturn's error code and request id, so an operator can find the audit entry.
#
#   keyturn-secret.sh --url https://keyturn.example.com --cert device.pem --key device.key \
#                     [--cacert ca.pem] NAME
#
# Exit codes: 0 value printed; 1 refused or not found (the error code says which);
# 2 bad usage; 3 transport failure (no answer from the endpoint).
set -euo pipefail

usage() {
  echo "usage: $0 --url URL --cert CERT.pem --key KEY.pem [--cacert CA.pem] NAME" >&2
  exit 2
}

url="" cert="" key="" cacert="" name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --url) url="${2:-}"; shift 2 ;;
    --cert) cert="${2:-}"; shift 2 ;;
    --key) key="${2:-}"; shift 2 ;;
    --cacert) cacert="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$name" ] || usage; name="$1"; shift ;;
  esac
done
[ -n "$url" ] && [ -n "$cert" ] && [ -n "$key" ] && [ -n "$name" ] || usage
# Key Vault's name rules, checked here too so a typo never leaves the machine.
if ! [[ "$name" =~ ^[0-9A-Za-z-]{1,127}$ ]]; then
  echo "invalid secret name: 1-127 letters, digits and hyphens" >&2
  exit 2
fi
case "$url" in https://*) ;; *) echo "the URL must be https" >&2; exit 2 ;; esac

# Extracts a top-level string field from keyturn's JSON with whatever this system has:
# jq, python3, or (macOS) JavaScript for Automation.
json_field() {
  local field="$1"
  if command -v jq >/dev/null 2>&1; then
    jq -j --arg f "$field" '.[$f] // ""'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else "")' "$field"
  elif command -v osascript >/dev/null 2>&1; then
    osascript -l JavaScript -e 'function run(a){const s=$.NSString.alloc.initWithDataEncoding($.NSFileHandle.fileHandleWithStandardInput.readDataToEndOfFile,4).js;const v=JSON.parse(s)[a[0]];return typeof v==="string"?v:""}' "$field"
  else
    echo "need jq, python3 or osascript to read JSON" >&2
    return 3
  fi
}

args=(--silent --show-error --proto '=https' --tlsv1.2 --cert "$cert" --key "$key"
      --header 'Accept: application/json' --write-out '\n%{http_code}')
[ -z "$cacert" ] || args+=(--cacert "$cacert")

# The body holds the secret: it stays in memory (a shell variable), never in a file.
if ! response=$(curl "${args[@]}" "${url%/}/api/secrets/$name"); then
  echo "no answer from $url" >&2
  exit 3
fi
status="${response##*$'\n'}"
body="${response%$'\n'*}"

if [ "$status" = "200" ]; then
  printf '%s' "$body" | json_field value
  exit 0
fi
code=$(printf '%s' "$body" | json_field error || true)
request_id=$(printf '%s' "$body" | json_field requestId || true)
echo "keyturn refused: HTTP $status ${code:-unknown} (request id ${request_id:-none})" >&2
exit 1
