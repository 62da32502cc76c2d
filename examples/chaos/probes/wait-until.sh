#!/bin/sh
# wait-until.sh SECONDS COMMAND [ARGS...]
# Runs COMMAND every second until it succeeds or SECONDS have passed; exits with its last status.
# An experiment's method uses it to wait for a recovery as long as it may take and no longer
# (the steady-state hypothesis after the method then says whether it came).
set -u
limit="$1"; shift
end=$(( $(date +%s) + limit ))
while :; do
  "$@" && exit 0
  status=$?
  [ "$(date +%s)" -ge "$end" ] && exit "$status"
  sleep 1
done
