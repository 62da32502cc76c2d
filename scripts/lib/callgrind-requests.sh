#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: independent of the machine's load,
# so a change to the request path can be judged on a busy machine. Used by hand, not by tests:
#   scripts/lib/callgrind-requests.sh [BINARY]     (default target/release/coffer)
# Starts the binary under callgrind on plain HTTP with sqlite (synchronous=full), sets up KV v2
# with a secret and a policy token, then for each scenario zeroes the counters, sends requests
# with one connection for a few seconds (wrk -c1), dumps the counters and prints the
# instructions per request. Prints one line per scenario: name, requests, instructions/request.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:-$PWD/target/release/coffer}"
SECS="${CG_SECONDS:-4}"
for tool in valgrind callgrind_control wrk curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
TMP="$(mktemp -d "${TMPDIR:-/tmp}/coffer-cg.XXXXXX")"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$((20000 + RANDOM % 40000))
URL="http://127.0.0.1:$PORT"
printf 'storage "sqlite" {\n  path = "%s"\n}\nlistener "tcp" {\n  address = "127.0.0.1:%s"\n  tls_disable = true\n}\nlog_level = "warn"\n' \
  "$TMP/c.db" "$PORT" >"$TMP/c.hcl"
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$BIN" server -config "$TMP/c.hcl" \
  >"$TMP/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
  curl -s -o /dev/null "$URL/v1/sys/health" && break
  sleep 0.1
done
j() { sed -n -E "s/.*\"$1\"[[:space:]]*:[[:space:]]*\\[?\"([^\"]*)\".*/\\1/p"; }
init="$(curl -s -X PUT "$URL/v1/sys/init" -d '{"secret_shares":1,"secret_threshold":1}')"
key="$(printf '%s' "$init" | j keys_base64)"
root="$(printf '%s' "$init" | j root_token)"
curl -s -X PUT "$URL/v1/sys/unseal" -d "{\"key\":\"$key\"}" >/dev/null
H=(-H "X-Vault-Token: $root")
curl -s "${H[@]}" -X POST "$URL/v1/sys/mounts/secret" -d '{"type":"kv","options":{"version":"2"}}' >/dev/null
curl -s "${H[@]}" -X POST "$URL/v1/secret/data/bench" -d '{"data":{"password":"x"}}' >/dev/null
curl -s "${H[@]}" -X PUT "$URL/v1/sys/policies/acl/bench" \
  -d '{"policy":"path \"secret/data/*\" { capabilities = [\"create\", \"read\", \"update\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }\n"}' >/dev/null
tok="$(curl -s "${H[@]}" -X POST "$URL/v1/auth/token/create" -d '{"policies":["bench"],"ttl":"72h"}' | j client_token)"
[ -n "$tok" ] || { echo "setup failed" >&2; cat "$TMP/server.log" >&2; exit 1; }
cat >"$TMP/write.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Vault-Token"] = os.getenv("CG_TOKEN")
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/secret/data/cg-" .. (n % 32), nil, '{"data":{"password":"bench-value-0123456789"}}')
end
EOF
cat >"$TMP/token.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Vault-Token"] = os.getenv("CG_TOKEN")
wrk.body = '{"policies":["default"],"ttl":"1h"}'
EOF
export CG_TOKEN="$tok"
measure() { # measure NAME PATH [wrk args]
  local name="$1" path="$2" n ir
  shift 2
  # Warm-up outside the count (caches, connection pools).
  wrk -t1 -c1 -d1s "$@" "$URL$path" >/dev/null 2>&1
  callgrind_control -z "$PID" >/dev/null 2>&1
  n="$(wrk -t1 -c1 -d"${SECS}s" "$@" "$URL$path" | awk '/requests in/ { print $1 }')"
  rm -f "$TMP"/cg.*.*
  callgrind_control -d "$name" "$PID" >/dev/null 2>&1
  ir="$(cat "$TMP"/cg.*.* | awk '/^summary:/ { s += $2 } END { print s }')"
  # CG_KEEP=DIR keeps each scenario's profile, for callgrind_annotate.
  if [ -n "${CG_KEEP:-}" ]; then mkdir -p "$CG_KEEP"; cat "$TMP"/cg.*.* >"$CG_KEEP/$(printf '%s' "$name" | tr -c 'a-zA-Z0-9' _).out"; fi
  # glibc's memcpy/memset use `rep movsb`/`rep stosb`, which callgrind counts once per byte
  # (the CPU moves 32 or more bytes per cycle): they are shown apart.
  rep="$(callgrind_annotate --inclusive=yes --threshold=100 "$TMP"/cg.*.* 2>/dev/null |
    awk '/__mem(cpy|move|set)_[a-z0-9_]*erms/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')"
  awk -v name="$name" -v n="$n" -v ir="$ir" -v rep="$rep" 'BEGIN {
    printf "%-20s %7d requests %9.0f instructions/request, %9.0f without memcpy/memset\n", name, n, ir / n, (ir - rep) / n }'
}
measure "sys/health" /v1/sys/health
measure "KV v2 read" /v1/secret/data/bench -H "X-Vault-Token: $tok"
measure "token lookup-self" /v1/auth/token/lookup-self -H "X-Vault-Token: $tok"
measure "KV v2 write" /v1/secret/data/bench -s "$TMP/write.lua"
measure "token create" /v1/auth/token/create -s "$TMP/token.lua"
