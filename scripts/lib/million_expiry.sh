#!/usr/bin/env bash
# Issue 18, goal 3's memory half: N token leases (default 1,000,000) all falling due in the same
# second, and the server's memory while expiry revokes them. Not part of scripts/bench (the fill
# alone takes minutes): run it by hand after a release build.
#
#   scripts/lib/million_expiry.sh [N]
#
# A fresh release server (sqlite, synchronous = "normal" only to fill faster, plain HTTP on
# loopback) gets N tokens from auth/token/create through wrk (16 connections), each with the TTL
# that makes it expire at one chosen second. From that second on, the server's VmRSS is sampled
# every second, and every 5 s the token entries left are counted with sqlite3 straight from the
# database file (keys are not encrypted, values are; a read-only count that builds no answer in
# the server, unlike a LIST through the API). Prints the RSS before the deadline, the highest
# VmRSS and the kernel's high-water mark (VmHWM) while they were revoked, and how long it took.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-1000000}"
case "$N" in '' | *[!0-9]*) echo "N must be a number, not '$N'" >&2; exit 2 ;; esac
BIN="target/release/coffer"
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p coffer --locked" >&2; exit 1; }
for t in wrk curl jq sqlite3; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done

TMP="$(mktemp -d)"
PID=""
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
cat >"$TMP/c.hcl" <<EOF
storage "sqlite" {
  path        = "$TMP/c.db"
  synchronous = "normal"
}
listener "tcp" {
  address     = "127.0.0.1:$PORT"
  tls_disable = true
}
log_level = "warn"
EOF
"$BIN" server -config "$TMP/c.hcl" >"$TMP/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 500); do curl -s -o /dev/null "$URL/v1/sys/health" && break; sleep 0.02; done
init="$(curl -sf -X PUT "$URL/v1/sys/init" -d '{"secret_shares":1,"secret_threshold":1}')"
ROOT="$(jq -r .root_token <<<"$init")"
curl -sf -X PUT "$URL/v1/sys/unseal" -d "{\"key\":\"$(jq -r '.keys_base64[0]' <<<"$init")\"}" >/dev/null
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
tokens_left() { sqlite3 -readonly "$TMP/c.db" "SELECT count(*) FROM coffer_kv WHERE key LIKE 'sys/token/id/%'"; }

cat >"$TMP/create.lua" <<'EOF'
local per_thread = tonumber(os.getenv("PER_THREAD"))
local deadline = tonumber(os.getenv("DEADLINE"))
local marker = os.getenv("MARKER")
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Vault-Token"] = os.getenv("ROOT")
local done = 0
request = function()
  local t = tostring(math.max(1, deadline - os.time())) .. "s"
  return wrk.format(nil, nil, nil, '{"ttl":"' .. t .. '","policies":["default"]}')
end
response = function(status)
  if status ~= 200 then io.stderr:write("token create answered " .. status .. "\n") end
  done = done + 1
  if done == per_thread then
    local f = io.open(marker .. id, "w"); f:close(); wrk.thread:stop()
  end
end
EOF
# The deadline leaves room for the fill at about 4,000 tokens/s, plus 30 s.
DEADLINE=$(($(date +%s) + N / 4000 + 30))
echo "filling $N tokens due at $(date -d "@$DEADLINE" +%T)"
t0=$(date +%s)
PER_THREAD=$(((N + 1) / 2)) DEADLINE="$DEADLINE" MARKER="$TMP/done-" ROOT="$ROOT" \
  wrk -t2 -c16 -d3600s -s "$TMP/create.lua" "$URL/v1/auth/token/create" >"$TMP/wrk.txt" 2>&1 &
WRK=$!
while ! { [ -e "$TMP/done-0" ] && [ -e "$TMP/done-1" ]; }; do
  kill -0 "$WRK" 2>/dev/null || { cat "$TMP/wrk.txt" >&2; echo "wrk ended early" >&2; exit 1; }
  sleep 0.2
done
kill -INT "$WRK" 2>/dev/null || true
wait "$WRK" 2>/dev/null || true
grep -q answered "$TMP/wrk.txt" && { head -3 "$TMP/wrk.txt" >&2; echo "token creation failed" >&2; exit 1; }
echo "filled in $(($(date +%s) - t0)) s; token entries: $(tokens_left)"
[ "$(date +%s)" -lt "$DEADLINE" ] || { echo "the fill overran the deadline; rerun with a smaller N" >&2; exit 1; }
sleep $((DEADLINE - $(date +%s)))
before="$(rss)"
max="$before"
start=$(date +%s)
left="$(tokens_left)"
i=0
while [ "$left" -gt 1 ]; do
  sleep 1
  i=$((i + 1))
  r="$(rss)"
  max="$(awk -v a="$max" -v b="$r" 'BEGIN { print (b > a) ? b : a }')"
  if [ $((i % 5)) = 0 ]; then
    left="$(tokens_left)"
    echo "$(($(date +%s) - start)) s after the deadline: $((left - 1)) left, VmRSS $r MiB"
  fi
  [ "$i" -lt 7200 ] || { echo "not drained within 2 h" >&2; break; }
done
echo
echo "| leases due at once | RSS before (MiB) | highest VmRSS while revoked (MiB) | VmHWM since start (MiB) | all revoked after (s) |"
echo "| ---: | ---: | ---: | ---: | ---: |"
echo "| $N | $before | $max | $(hwm) | $(($(date +%s) - start)) |"
