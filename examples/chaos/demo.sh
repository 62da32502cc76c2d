#!/usr/bin/env bash
# The local setup the experiments in examples/chaos run against: a Coffer server on the host,
# and a "container" (its own network, mount and PID namespaces, a tmpfs for secrets) in which
# `coffer agent` keeps a small demo app's secrets fresh.
#
#   examples/chaos/demo.sh start    set everything up (needs root: namespaces, veth, mounts)
#   examples/chaos/demo.sh env      print the variables the experiments read (eval-able)
#   examples/chaos/demo.sh restart-container
#                                   restart the container (agent, app, and their tmpfs), as a
#                                   crash or a pod's container restart would
#   examples/chaos/demo.sh stop     stop everything and remove the netns and the demo directory
#
#   host ($NET.1, $NET.3)                     netns $DEMO_NS (the container, $NET.2)
#   coffer server  https://$NET.3:8200  <-- veth -->  coffer agent (status http://$NET.2:8100)
#   PostgreSQL     $NET.1:15432 (optional)            demo app    (http://$NET.2:8080/health)
#
# Settings (environment):
#   DEMO_DIR        working directory, logs and keys (default /tmp/coffer-chaos-demo)
#   DEMO_NS         network namespace name (default coffer-demo, at most 11 characters)
#   DEMO_NET        first three octets of the /29 between host and container (default 10.231.0)
#   COFFER_BIN      the coffer binary (default: `coffer` on PATH)
#   DEMO_POSTGRES   1: also start PostgreSQL and give the app dynamic database credentials
#                   (default 1 when PostgreSQL's server binaries are installed, else 0)
#   DEMO_DB_TTL     the database credentials' lease TTL (default 10m)
#   DEMO_TOKEN_TTL  the agent's token TTL (default 5m)
#   DEMO_MAX_STALE  the agent's template_config.max_stale (default 15m)
#   DEMO_EXIT_ON_MAX_STALE  true: the agent runs the app itself (exec mode) and stops it past
#                   max_stale (default false: agent and app are siblings, the sidecar form)
#   DEMO_CACHE      1: the agent persists its encrypted cache in the container (default 1)
#
# Demo only: the unseal key and the root token are kept in $DEMO_DIR/init.json (mode 0600) so
# the demo can be torn down and set up without questions. Never do that with a real server.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
DEMO_DIR="${DEMO_DIR:-/tmp/coffer-chaos-demo}"
DEMO_NS="${DEMO_NS:-coffer-demo}"
DEMO_NET="${DEMO_NET:-10.231.0}"
COFFER_BIN="${COFFER_BIN:-$(command -v coffer || true)}"
DEMO_DB_TTL="${DEMO_DB_TTL:-10m}"
DEMO_TOKEN_TTL="${DEMO_TOKEN_TTL:-5m}"
DEMO_MAX_STALE="${DEMO_MAX_STALE:-15m}"
DEMO_EXIT_ON_MAX_STALE="${DEMO_EXIT_ON_MAX_STALE:-false}"
DEMO_CACHE="${DEMO_CACHE:-1}"

host_ip="$DEMO_NET.1"
ctr_ip="$DEMO_NET.2"
# The server has an address of its own on the host side, so that a partition of the container
# from the server leaves the host's own probes of the container (from $host_ip) alone.
server_ip="$DEMO_NET.3"
veth_host="${DEMO_NS}-h"
veth_ctr="${DEMO_NS}-c"
addr="https://$server_ip:8200"
pg_port=15432

die() { echo "demo.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# Waits up to $2 seconds for the command in "$1" to succeed.
wait_for() {
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    if eval "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

print_env() {
  cat <<ENV
export DEMO_DIR='$DEMO_DIR'
export DEMO_NS='$DEMO_NS'
export COFFER_BIN='$COFFER_BIN'
export COFFER_ADDR='$addr'
export COFFER_CACERT='$DEMO_DIR/ca.crt'
export COFFER_TOKEN="\$(jq -r .root_token '$DEMO_DIR/init.json')"
export DEMO_SERVER_HOST='$server_ip'
export DEMO_SERVER_PID_FILE='$DEMO_DIR/server.pid'
export DEMO_AGENT_PID_FILE='$DEMO_DIR/agent.pid'
export DEMO_AGENT_CACHE='$DEMO_DIR/container/cache/agent-cache'
export DEMO_AGENT_URL='http://$ctr_ip:8100'
export DEMO_APP_URL='http://$ctr_ip:8080/health'
export DEMO_AUDIT_LOG='$DEMO_DIR/audit.log'
export DEMO_SCRIPT='$here/demo.sh'
export DEMO_PROBES='$here/probes'
export DEMO_STATE_DIR='$DEMO_DIR/chaos-state'
ENV
}

stop() {
  if [ -f "$DEMO_DIR/container.pid" ]; then
    # Killing the container's first process ends its PID namespace and everything in it.
    kill -KILL "$(cat "$DEMO_DIR/container.pid")" 2>/dev/null || true
  fi
  if [ -f "$DEMO_DIR/server.pid" ]; then
    local pid; pid="$(cat "$DEMO_DIR/server.pid")"
    kill -CONT "$pid" 2>/dev/null || true   # a paused server cannot act on TERM
    kill -TERM "$pid" 2>/dev/null || true
    wait_for "! kill -0 $pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ -d "$DEMO_DIR/pg/data" ] && bindir="$(pg_bindir)"; then
    runuser -u "$(stat -c %U "$DEMO_DIR/pg")" -- "$bindir/pg_ctl" -D "$DEMO_DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  ip netns del "$DEMO_NS" 2>/dev/null || true
  ip link del "$veth_host" 2>/dev/null || true
  umount -l "$DEMO_DIR/pod" 2>/dev/null || true
  if [ -d "$DEMO_DIR" ] && [ "${DEMO_KEEP_DIR:-0}" != 1 ]; then
    rm -rf "$DEMO_DIR"
  fi
}

start_postgres() {
  local bindir user
  bindir="$(pg_bindir)" || die "DEMO_POSTGRES=1 but PostgreSQL's server binaries are not installed (apt-get install postgresql)"
  # postgres refuses to run as root.
  if id postgres >/dev/null 2>&1; then user=postgres; else
    id coffer-pg >/dev/null 2>&1 || useradd --system --no-create-home coffer-pg
    user=coffer-pg
  fi
  mkdir -p "$DEMO_DIR/pg"
  chown "$user" "$DEMO_DIR/pg"
  openssl rand -hex 24 > "$DEMO_DIR/pg/pwfile"
  chown "$user" "$DEMO_DIR/pg/pwfile"
  chmod 0600 "$DEMO_DIR/pg/pwfile"
  runuser -u "$user" -- "$bindir/initdb" -D "$DEMO_DIR/pg/data" -U coffer_admin \
    --pwfile="$DEMO_DIR/pg/pwfile" --auth=scram-sha-256 >"$DEMO_DIR/pg/initdb.log" 2>&1 \
    || die "initdb failed: see $DEMO_DIR/pg/initdb.log"
  # Logins over the demo link (Coffer's and the app's), by password only.
  echo "host all all $DEMO_NET.0/29 scram-sha-256" >> "$DEMO_DIR/pg/data/pg_hba.conf"
  runuser -u "$user" -- "$bindir/pg_ctl" -D "$DEMO_DIR/pg/data" -l "$DEMO_DIR/pg/postgres.log" -w \
    -o "-h $host_ip -p $pg_port -k $DEMO_DIR/pg" start >/dev/null \
    || die "PostgreSQL did not start: see $DEMO_DIR/pg/postgres.log"
}

# A new container: new PID and mount namespaces (so an empty secrets tmpfs), same network
# namespace and "pod" tmpfs. Returns once the agent runs, not waiting for the app.
start_container() {
  setsid ip netns exec "$DEMO_NS" unshare --mount --propagation private --pid --fork --kill-child \
    --mount-proc "$DEMO_DIR/container-init.sh" </dev/null >/dev/null 2>&1 &
  echo $! > "$DEMO_DIR/container.pid"
  wait_for "pgrep -f -- 'agent -config $DEMO_DIR/agent.hcl' > '$DEMO_DIR/agent.pid'" 10 \
    || die "the agent did not start: see $DEMO_DIR/agent.log"
}

# What a container restart does to the workload: every process in it gone, its tmpfs with
# them; what outlives it is the pod's (the network namespace, the pod tmpfs with the cache key,
# the cache volume).
restart_container() {
  [ -f "$DEMO_DIR/container.pid" ] || die "no demo container: run '$0 start' first"
  local pid; pid="$(cat "$DEMO_DIR/container.pid")"
  kill -KILL "$pid" 2>/dev/null || true
  wait_for "! kill -0 $pid && ! pgrep -f -- 'agent -config $DEMO_DIR/agent.hcl'" 10 \
    || die "the old container did not stop"
  start_container
  say "container restarted (agent pid $(cat "$DEMO_DIR/agent.pid"))"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, veth pairs, mounts)"
  [ -n "$COFFER_BIN" ] && [ -x "$COFFER_BIN" ] || die "no coffer binary: put it on PATH or set COFFER_BIN"
  for tool in ip unshare openssl python3 jq curl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
  done
  [ "${#DEMO_NS}" -le 11 ] || die "DEMO_NS must be at most 11 characters (interface names)"
  if [ -e "$DEMO_DIR" ]; then die "$DEMO_DIR exists: run '$0 stop' first"; fi
  if [ -z "${DEMO_POSTGRES:-}" ]; then
    if pg_bindir >/dev/null; then DEMO_POSTGRES=1; else DEMO_POSTGRES=0; fi
  fi
  # Everything the demo writes is root's alone; the directory itself is traversable so that
  # PostgreSQL (which refuses to run as root) can reach its own subdirectory.
  umask 077
  mkdir -p "$DEMO_DIR"
  chmod 0711 "$DEMO_DIR"
  mkdir -p "$DEMO_DIR/container/boot" "$DEMO_DIR/container/secrets" "$DEMO_DIR/container/cache" \
    "$DEMO_DIR/pod" "$DEMO_DIR/chaos-state"
  # Host faults' records (coffer chaos fault ... -state-dir): this demo's own, so that ending
  # "every fault" ends this demo's only.
  chmod 0700 "$DEMO_DIR/chaos-state"
  # The pod's memory volume (Kubernetes: an emptyDir with medium Memory): it outlives a
  # container restart, so the agent's cache key kept there does too.
  mount -t tmpfs -o mode=0700,size=1m tmpfs "$DEMO_DIR/pod"
  trap 'say "start failed; logs are in $DEMO_DIR"; DEMO_KEEP_DIR=1 stop' ERR

  say "network namespace $DEMO_NS ($ctr_ip) linked to the host ($host_ip)"
  ip netns add "$DEMO_NS"
  ip link add "$veth_host" type veth peer name "$veth_ctr"
  ip link set "$veth_ctr" netns "$DEMO_NS"
  ip addr add "$host_ip/29" dev "$veth_host"
  ip addr add "$server_ip/29" dev "$veth_host"
  ip link set "$veth_host" up
  ip -n "$DEMO_NS" addr add "$ctr_ip/29" dev "$veth_ctr"
  ip -n "$DEMO_NS" link set "$veth_ctr" up
  ip -n "$DEMO_NS" link set lo up

  say "TLS: a demo CA and the server's certificate"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=coffer chaos demo CA" -keyout "$DEMO_DIR/ca.key" -out "$DEMO_DIR/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=coffer" \
    -keyout "$DEMO_DIR/tls.key" -out "$DEMO_DIR/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$server_ip" > "$DEMO_DIR/tls.ext"
  openssl x509 -req -in "$DEMO_DIR/tls.csr" -CA "$DEMO_DIR/ca.crt" -CAkey "$DEMO_DIR/ca.key" \
    -CAcreateserial -days 7 -extfile "$DEMO_DIR/tls.ext" -out "$DEMO_DIR/tls.crt" 2>/dev/null
  cp "$DEMO_DIR/ca.crt" "$DEMO_DIR/container/boot/ca.crt"

  say "Coffer server on $addr (SQLite in $DEMO_DIR, chaos faults enabled)"
  cat > "$DEMO_DIR/server.hcl" <<HCL
storage "sqlite" {
  path = "$DEMO_DIR/coffer.db"
}
listener "tcp" {
  address       = "$server_ip:8200"
  tls_cert_file = "$DEMO_DIR/tls.crt"
  tls_key_file  = "$DEMO_DIR/tls.key"
}
api_addr = "$addr"
pid_file = "$DEMO_DIR/server.pid"
chaos {
  enabled = true
}
HCL
  setsid "$COFFER_BIN" server -config "$DEMO_DIR/server.hcl" >"$DEMO_DIR/server.log" 2>&1 < /dev/null &
  export COFFER_ADDR="$addr" COFFER_CACERT="$DEMO_DIR/ca.crt"
  wait_for "[ -s '$DEMO_DIR/server.pid' ] && curl -s --cacert '$DEMO_DIR/ca.crt' '$addr/v1/sys/health'" 20 \
    || die "the server did not start: see $DEMO_DIR/server.log"
  (umask 077; "$COFFER_BIN" operator init -key-shares=1 -key-threshold=1 -format=json > "$DEMO_DIR/init.json")
  jq -r '.unseal_keys_b64[0]' "$DEMO_DIR/init.json" | "$COFFER_BIN" operator unseal - >/dev/null
  COFFER_TOKEN="$(jq -r .root_token "$DEMO_DIR/init.json")"
  export COFFER_TOKEN

  say "audit log, a KV secret, the app's policy and AppRole"
  "$COFFER_BIN" audit enable file file_path="$DEMO_DIR/audit.log" >/dev/null
  "$COFFER_BIN" secrets enable -path=secret kv-v2 >/dev/null
  "$COFFER_BIN" kv put secret/app api_key="$(openssl rand -hex 16)" >/dev/null
  # Read its secret, and be told at once when it changes (the agent subscribes to kv events).
  local policy='path "secret/data/app" { capabilities = ["read"] }
path "sys/events/subscribe/*" { capabilities = ["read"] }'
  if [ "$DEMO_POSTGRES" = 1 ]; then
    say "PostgreSQL on $host_ip:$pg_port and the database secrets engine"
    start_postgres
    "$COFFER_BIN" secrets enable database >/dev/null
    "$COFFER_BIN" write database/config/demo plugin_name=postgresql-database-plugin \
      connection_url="postgres://{{username}}:{{password}}@$host_ip:$pg_port/postgres?sslmode=disable" \
      username=coffer_admin password="$(cat "$DEMO_DIR/pg/pwfile")" allowed_roles=app >/dev/null
    "$COFFER_BIN" write database/roles/app db_name=demo \
      creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" \
      default_ttl="$DEMO_DB_TTL" max_ttl=24h >/dev/null
    policy="$policy
path \"database/creds/app\" { capabilities = [\"read\"] }"
  fi
  printf '%s\n' "$policy" | "$COFFER_BIN" policy write app - >/dev/null
  "$COFFER_BIN" auth enable approle >/dev/null
  "$COFFER_BIN" write auth/approle/role/app token_policies=app token_ttl="$DEMO_TOKEN_TTL" \
    token_max_ttl=24h secret_id_num_uses=0 >/dev/null
  "$COFFER_BIN" read -field=role_id auth/approle/role/app/role-id > "$DEMO_DIR/container/boot/role-id"
  (umask 077; "$COFFER_BIN" write -f -field=secret_id auth/approle/role/app/secret-id > "$DEMO_DIR/container/boot/secret-id")

  say "the container: coffer agent and the demo app"
  local secrets="$DEMO_DIR/container/secrets"
  local tmpl='{{ with secret "secret/data/app" }}{"api_key": "{{ .Data.data.api_key }}", "secret_version": {{ .Data.metadata.version }}{{ end }}'
  if [ "$DEMO_POSTGRES" = 1 ]; then
    tmpl="$tmpl"'{{ with secret "database/creds/app" }}, "db_username": "{{ .Data.username }}", "db_password": "{{ .Data.password }}"{{ end }}'
  fi
  tmpl="$tmpl}"
  local cache=""
  if [ "$DEMO_CACHE" = 1 ]; then
    cache="cache {
  persist {
    path       = \"$DEMO_DIR/container/cache/agent-cache\"
    key_path   = \"$DEMO_DIR/pod/cache-key\"
    allow_disk = true
  }
}"
  fi
  local app_env="SECRETS_FILE=$secrets/app.json LISTEN=$ctr_ip:8080"
  [ "$DEMO_POSTGRES" = 1 ] && app_env="$app_env DB_HOST=$host_ip DB_PORT=$pg_port"
  local exec_block=""
  if [ "$DEMO_EXIT_ON_MAX_STALE" = true ]; then
    exec_block="exec {
  command = [\"/usr/bin/env\", $(printf '"%s", ' $app_env)\"python3\", \"$here/app.py\"]
  stop_timeout = \"5s\"
}"
  fi
  cat > "$DEMO_DIR/agent.hcl" <<HCL
coffer {
  address = "$addr"
  ca_cert = "$DEMO_DIR/container/boot/ca.crt"
}
auto_auth {
  method "approle" {
    min_backoff = "1s"
    max_backoff = "5s"
    config = {
      role_id_file_path   = "$DEMO_DIR/container/boot/role-id"
      secret_id_file_path = "$DEMO_DIR/container/boot/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}
template_config {
  max_stale         = "$DEMO_MAX_STALE"
  exit_on_max_stale = $DEMO_EXIT_ON_MAX_STALE
}
template {
  contents    = <<EOT
$tmpl
EOT
  destination = "$secrets/app.json"
  perms       = "0400"
}
$cache
$exec_block
listener "tcp" {
  address     = "$ctr_ip:8100"
  tls_disable = true
}
HCL
  local app_cmd=""
  [ "$DEMO_EXIT_ON_MAX_STALE" = true ] || app_cmd="env $app_env python3 '$here/app.py' >>'$DEMO_DIR/app.log' 2>&1 &"
  cat > "$DEMO_DIR/container-init.sh" <<SH
#!/bin/sh
# PID 1 of the demo container: a private tmpfs for secrets, the agent, the app.
mount -t tmpfs -o mode=0700,size=4m tmpfs '$secrets'
'$COFFER_BIN' agent -config '$DEMO_DIR/agent.hcl' >>'$DEMO_DIR/agent.log' 2>&1 &
$app_cmd
while :; do wait; sleep 1; done
SH
  chmod 0755 "$DEMO_DIR/container-init.sh"
  start_container
  wait_for "curl -sf http://$ctr_ip:8080/health" 30 \
    || die "the app is not healthy: see $DEMO_DIR/agent.log and $DEMO_DIR/app.log"
  trap - ERR
  say "ready; the experiments read these variables:"
  print_env
}

case "${1:-}" in
  start) start ;;
  restart-container) restart_container ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|env|restart-container|stop (see the header of this file)" >&2; exit 2 ;;
esac
