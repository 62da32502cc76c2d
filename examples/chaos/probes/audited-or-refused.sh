#!/bin/sh
# DESIGN invariant 3 from the outside: a read of secret/app is either answered and then found in
# the audit log (by its request id), or refused with a 5xx (the server failing closed).
# Exit 0 when that holds; prints what it saw, never the secret. Reads COFFER_ADDR,
# COFFER_CACERT, COFFER_TOKEN, DEMO_AUDIT_LOG.
set -u
out="$(curl -s --max-time 5 --cacert "$COFFER_CACERT" -H "X-Vault-Token: $COFFER_TOKEN" \
  -w '\n%{http_code}' "$COFFER_ADDR/v1/secret/data/app")"
code="$(printf '%s\n' "$out" | tail -n 1)"
case "$code" in
  200)
    id="$(printf '%s\n' "$out" | sed '$d' | jq -r '.request_id')"
    if grep -q "\"$id\"" "$DEMO_AUDIT_LOG"; then
      echo "answered 200, and request $id is in the audit log"
    else
      echo "answered 200, but request $id is NOT in the audit log"
      exit 1
    fi ;;
  5??)
    echo "refused with $code: $(printf '%s\n' "$out" | sed '$d' | jq -c '.errors' 2>/dev/null)" ;;
  *)
    echo "unexpected answer $code"
    exit 1 ;;
esac
