#!/bin/sh
# The policy exit_on_max_stale enforces, checked from outside: while the agent is within
# max_stale the app serves; once the agent is past it (its status says unhealthy, or it has
# exited), the app is stopped within GRACE seconds (default 10). Exit 0 when that holds.
# Reads DEMO_AGENT_URL, DEMO_APP_URL.
set -u
grace="${GRACE:-10}"
app_code() { curl -s -o /dev/null --max-time 3 -w '%{http_code}' "$DEMO_APP_URL"; }
status="$(curl -s --max-time 3 "$DEMO_AGENT_URL/agent/v1/status")"
healthy="$(printf '%s' "$status" | jq -r '.healthy' 2>/dev/null)"
if [ "$healthy" = true ]; then
  code="$(app_code)"
  echo "agent within max_stale (stale $(printf '%s' "$status" | jq -r '.stale_seconds') s); app answers $code"
  [ "$code" = 200 ]
  exit
fi
end=$(( $(date +%s) + grace ))
while [ "$(app_code)" = 200 ]; do
  if [ "$(date +%s)" -ge "$end" ]; then
    echo "agent past max_stale (or gone), and the app still serves after ${grace} s"
    exit 1
  fi
  sleep 1
done
echo "agent past max_stale (or gone); the app is not serving"
