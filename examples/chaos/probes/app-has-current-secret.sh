#!/bin/sh
# Exit 0 when the demo app holds the current version of secret/app (the version number the
# app reports against the server's KV metadata); prints both. Reads DEMO_APP_URL, COFFER_ADDR,
# COFFER_CACERT, COFFER_TOKEN (a token that may read secret/metadata/app).
set -u
app="$(curl -sf --max-time 5 "$DEMO_APP_URL")" || { echo "the app does not answer healthy"; exit 1; }
have="$(printf '%s' "$app" | jq -r '.secret_version')"
current="$(curl -sf --max-time 5 --cacert "$COFFER_CACERT" -H "X-Vault-Token: $COFFER_TOKEN" \
  "$COFFER_ADDR/v1/secret/metadata/app" | jq -r '.data.current_version')" \
  || { echo "the server does not answer"; exit 1; }
echo "the app holds version $have of secret/app; the current version is $current"
[ "$have" = "$current" ]
