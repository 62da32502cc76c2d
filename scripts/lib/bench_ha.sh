# HA benchmarks (issue 17), sourced by scripts/bench after its single-node runs; uses its helpers
# (say, die, free_port, api, expect, json_str, make_policy_token, to_ms, field) and files
# ($TMP/tls.crt, $TMP/write.lua). BENCH_HA=0 skips it.
#
# Three nodes of the release binary on one private PostgreSQL cluster (made here with initdb, on
# loopback, durable settings), TLS listeners, default lock TTL (15 s). Rows:
#   - sys/health on the active node: the floor of this section;
#   - KV v2 reads with one node taking the connections (the active) and with all three taking
#     them at once (wrk per node, req/s summed): standbys serve KV reads themselves from their
#     read replica (the default, ha_standby_reads), so this is read scale-out on one machine;
#   - KV v2 reads through a standby (answered by the standby itself), and writes through a
#     standby (forwarded over mTLS), beside the same on the active;
#   - failover: kill -9 of the active node, then writes through a standby until one succeeds;
#     the time from the kill to that first acknowledged write.

HA_PIDS=()
HA_PG_DATA=""
HA_PG_BIN=""

ha_stop() {
  local p
  for p in "${HA_PIDS[@]}"; do
    # Reaped here, so that bash does not report each as "Killed".
    { kill -KILL "$p" && wait "$p"; } 2>/dev/null || true
  done
  if [ -n "$HA_PG_DATA" ] && [ -f "$HA_PG_DATA/postmaster.pid" ]; then
    runuser -u postgres -- "$HA_PG_BIN/pg_ctl" -D "$HA_PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  [ -z "$HA_PG_DATA" ] || rm -rf "$HA_PG_DATA"
  HA_PG_DATA=""
}

# The directory with initdb, pg_ctl and postgres (scripts/test's search order), or nothing.
ha_pg_bindir() {
  local d
  d="$(pg_config --bindir 2>/dev/null || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  done
}

# wrk against several base URLs at once; one row: req/s summed, p50 and p99 the worst of them.
run_parallel() { # run_parallel NAME CONNS_EACH PATH URLS... -- [wrk args...]
  local name="$1" conns="$2" path="$3"
  shift 3
  local urls=() u i=0 rps=0 p50=0 p99=0 errs=0 out pids=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do urls+=("$1"); shift; done
  [ "${1:-}" = -- ] && shift
  say "wrk $name, ${#urls[@]} x $conns connection(s), ${SECONDS_PER_RUN}s"
  for u in "${urls[@]}"; do
    i=$((i + 1))
    wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency "$@" "$u$path" >"$TMP/wrk-ha-$i.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "wrk failed for $name: $(cat "$TMP"/wrk-ha-*.txt)"; done
  for out in "$TMP"/wrk-ha-*.txt; do
    local r a b n s
    r="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    a="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
    b="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
    [ -n "$r" ] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    n="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    s="$(awk '/Socket errors:/ { s = 0; for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }' "$out")"
    rps="$(awk -v x="$rps" -v y="$r" 'BEGIN { printf "%.2f", x + y }')"
    p50="$(awk -v x="$p50" -v y="$a" 'BEGIN { print (y > x) ? y : x }')"
    p99="$(awk -v x="$p99" -v y="$b" 'BEGIN { print (y > x) ? y : x }')"
    errs=$((errs + ${n:-0} + ${s:-0}))
  done
  rm -f "$TMP"/wrk-ha-*.txt
  ROWS+=("$name|$((conns * ${#urls[@]}))|$rps|$p50|$p99|$errs")
}

# Waits until node I (0-based) answers sys/health with CODE (200 active, 429 standby).
ha_wait_health() { # ha_wait_health I CODE SECONDS
  local i="$1" want="$2" end=$(($(date +%s) + $3)) code
  while :; do
    code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "${HA_URLS[$i]}/v1/sys/health" 2>/dev/null || true)"
    [ "$code" = "$want" ] && return 0
    [ "$(date +%s)" -lt "$end" ] || die "HA node $i: sys/health $code, not $want, after $3 s (logs: $TMP/ha-*.log)"
    sleep 0.05
  done
}

# One node (no HA) on the same PostgreSQL, beside PostgreSQL's own floor: durable writes on
# PostgreSQL storage (issue 18: group commit, a group's writes in one statement) against
# the rate at which one client commits one-row INSERTs (pgbench -c1, synchronous_commit on: one
# WAL flush per commit), the PostgreSQL counterpart of the dd floor. Sets PG_FLOOR and adds the
# rows "PostgreSQL: KV v2 write", "PostgreSQL: token create" and "PostgreSQL: secret lease
# create" (the database engine's credentials, their users made on the same PostgreSQL).
PG_FLOOR=""
pg_single_bench() { # pg_single_bench DB_URL PG_PORT
  local db_url="$1" pg_port="$2" port pid out
  say "PostgreSQL floor: pgbench, one client, one-row INSERT per commit, ${SECONDS_PER_RUN}s"
  runuser -u postgres -- "$HA_PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U coffer -d postgres -qc \
    "CREATE TABLE coffer_floor (c int, v text)" >/dev/null || die "PostgreSQL floor: CREATE TABLE failed"
  printf '%s\n' "INSERT INTO coffer_floor VALUES (:client_id, repeat('x', 100));" >"$HA_PG_DATA/floor.sql"
  chown postgres "$HA_PG_DATA/floor.sql"
  out="$(runuser -u postgres -- "$HA_PG_BIN/pgbench" -n -c1 -j1 -T"$SECONDS_PER_RUN" -f "$HA_PG_DATA/floor.sql" \
    -h 127.0.0.1 -p "$pg_port" -U coffer postgres 2>&1)" || die "pgbench failed: $out"
  PG_FLOOR="$(printf '%s\n' "$out" | awk '/^tps = / { printf "%.0f", $3; exit }')"
  [ -n "$PG_FLOOR" ] || die "could not parse pgbench output: $out"

  port="$(free_port)"
  printf '%s\n' \
    'storage "postgresql" {' \
    "  connection_url = \"$db_url\"" \
    '  table          = "coffer_single"' \
    '}' \
    '' \
    'listener "tcp" {' \
    "  address       = \"127.0.0.1:$port\"" \
    "  tls_cert_file = \"$TMP/tls.crt\"" \
    "  tls_key_file  = \"$TMP/tls.key\"" \
    '}' \
    '' \
    'log_level = "warn"' >"$TMP/pg-single.hcl"
  "$BIN" server -config "$TMP/pg-single.hcl" >"$TMP/pg-single.log" 2>&1 &
  pid=$!
  HA_PIDS+=("$pid")
  URL="https://127.0.0.1:$port"
  local end=$(($(date +%s) + 60))
  until curl -sk -o /dev/null --max-time 2 "$URL/v1/sys/health"; do
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/pg-single.log" >&2; die "the PostgreSQL node exited during start"; }
    [ "$(date +%s)" -lt "$end" ] || { cat "$TMP/pg-single.log" >&2; die "the PostgreSQL node did not answer within 60 s"; }
    sleep 0.05
  done
  say "PostgreSQL node: init, unseal, kv v2 at secret/, policy token"
  ROOT=""
  api PUT /v1/sys/init '{"secret_shares":1,"secret_threshold":1}'
  expect 200 "PostgreSQL node sys/init"
  local key root
  key="$(json_str keys_base64)"
  root="$(json_str root_token)"
  api PUT /v1/sys/unseal "{\"key\":\"$key\"}"
  expect 200 "PostgreSQL node sys/unseal"
  ROOT="$root"
  api POST /v1/sys/mounts/secret '{"type":"kv","options":{"version":"2"}}'
  case "$STATUS" in 200 | 204) ;; *) die "PostgreSQL node: mount kv v2 at secret/: HTTP $STATUS: $BODY_OUT" ;; esac
  make_policy_token
  export BENCH_TOKEN="$POLICY_TOKEN"
  run "PostgreSQL: KV v2 write" 16 2 /v1/secret/data/bench -s "$TMP/write.lua"
  run "PostgreSQL: token create" 16 2 /v1/auth/token/create -s "$TMP/token.lua"
  # Secret leases: the database engine on the same PostgreSQL, so each request runs the
  # role's CREATE ROLE (PostgreSQL's commit) and stores its lease (a group commit). A pool of
  # 16, one connection per wrk connection, so that the engine's pool (4 by default) is not what
  # is measured. The users and leases made stay in this throwaway PostgreSQL.
  say "PostgreSQL node: database engine on the same PostgreSQL, a token for its creds"
  api POST /v1/sys/mounts/database '{"type":"database"}'
  case "$STATUS" in 200 | 204) ;; *) die "PostgreSQL node: mount database: HTTP $STATUS: $BODY_OUT" ;; esac
  api POST /v1/database/config/bench "{\"plugin_name\":\"postgresql-database-plugin\",\"connection_url\":\"postgres://{{username}}:{{password}}@127.0.0.1:$pg_port/postgres?sslmode=disable\",\"username\":\"coffer\",\"password\":\"unused-trust-auth\",\"allowed_roles\":[\"bench\"],\"max_open_connections\":16}"
  case "$STATUS" in 200 | 204) ;; *) die "PostgreSQL node: database/config/bench: HTTP $STATUS: $BODY_OUT" ;; esac
  api POST /v1/database/roles/bench '{"db_name":"bench","creation_statements":["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '"'"'{{password}}'"'"' VALID UNTIL '"'"'{{expiration}}'"'"';"],"default_ttl":"1h","max_ttl":"2h"}'
  case "$STATUS" in 200 | 204) ;; *) die "PostgreSQL node: database/roles/bench: HTTP $STATUS: $BODY_OUT" ;; esac
  api PUT /v1/sys/policies/acl/bench-leases '{"policy":"path \"database/creds/bench\" { capabilities = [\"read\"] }\n"}'
  case "$STATUS" in 200 | 204) ;; *) die "PostgreSQL node: policy bench-leases: HTTP $STATUS: $BODY_OUT" ;; esac
  api POST /v1/auth/token/create '{"policies":["bench-leases"],"ttl":"72h"}'
  expect 200 "PostgreSQL node: create the lease token"
  local lease_token
  lease_token="$(json_str client_token)"
  ROOT="$lease_token"
  api GET /v1/database/creds/bench
  expect 200 "PostgreSQL node: database/creds/bench"
  ROOT="$root"
  run "PostgreSQL: secret lease create" 16 2 /v1/database/creds/bench -H "X-Vault-Token: $lease_token"
  { kill -TERM "$pid" && wait "$pid"; } 2>/dev/null || true
}

ha_bench() {
  HA_PG_BIN="$(ha_pg_bindir)"
  if [ -z "$HA_PG_BIN" ]; then
    say "installing PostgreSQL server binaries for the HA benchmark"
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/coffer-tests.conf >/dev/null
    apt_install postgresql
    HA_PG_BIN="$(ha_pg_bindir)"
    [ -n "$HA_PG_BIN" ] || die "PostgreSQL installed but initdb/pg_ctl not found"
  fi
  id postgres >/dev/null 2>&1 || die "the HA benchmark runs PostgreSQL as the user postgres, which does not exist"
  trap 'ha_stop; cleanup' EXIT

  local pg_port saved_url="$URL" saved_root="$ROOT" saved_token="$BENCH_TOKEN" i
  pg_port="$(free_port)"
  # Outside $TMP, which only root may enter.
  HA_PG_DATA="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-pg.XXXXXX")"
  chown postgres "$HA_PG_DATA" && chmod 700 "$HA_PG_DATA"
  say "PostgreSQL for HA: initdb in $HA_PG_DATA, port $pg_port"
  runuser -u postgres -- "$HA_PG_BIN/initdb" -D "$HA_PG_DATA" -A trust -U coffer -E UTF8 >"$TMP/ha-initdb.log" 2>&1 ||
    { cat "$TMP/ha-initdb.log" >&2; die "initdb failed"; }
  runuser -u postgres -- "$HA_PG_BIN/pg_ctl" -D "$HA_PG_DATA" -l "$HA_PG_DATA/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$HA_PG_DATA -c max_connections=200" \
    start >/dev/null || { cat "$HA_PG_DATA/postgres.log" >&2; die "PostgreSQL did not start"; }
  local db_url="postgres://coffer@127.0.0.1:$pg_port/postgres?sslmode=disable"
  local pg_first=${#ROWS[@]}
  pg_single_bench "$db_url" "$pg_port"

  HA_URLS=()
  for i in 0 1 2; do
    local port cport
    port="$(free_port)"
    cport="$(free_port)"
    HA_URLS+=("https://127.0.0.1:$port")
    cat >"$TMP/ha-$i.hcl" <<EOF
storage "postgresql" {
  connection_url = "$db_url"
  ha_enabled     = "true"
}

listener "tcp" {
  address       = "127.0.0.1:$port"
  tls_cert_file = "$TMP/tls.crt"
  tls_key_file  = "$TMP/tls.key"
}

api_addr     = "https://127.0.0.1:$port"
cluster_addr = "https://127.0.0.1:$cport"
log_level    = "warn"
EOF
    "$BIN" server -config "$TMP/ha-$i.hcl" >"$TMP/ha-$i.log" 2>&1 &
    HA_PIDS+=($!)
  done
  local end=$(($(date +%s) + 60))
  for i in 0 1 2; do
    until curl -sk -o /dev/null --max-time 2 "${HA_URLS[$i]}/v1/sys/health"; do
      kill -0 "${HA_PIDS[$i]}" 2>/dev/null || { cat "$TMP/ha-$i.log" >&2; die "HA node $i exited during start"; }
      [ "$(date +%s)" -lt "$end" ] || { cat "$TMP/ha-$i.log" >&2; die "HA node $i did not answer within 60 s"; }
      sleep 0.05
    done
  done

  say "HA: init through node 0, unseal node 0 (it leads), then the others"
  URL="${HA_URLS[0]}"
  ROOT=""
  api PUT /v1/sys/init '{"secret_shares":1,"secret_threshold":1}'
  expect 200 "HA sys/init"
  local key root
  key="$(json_str keys_base64)"
  root="$(json_str root_token)"
  for i in 0 1 2; do
    URL="${HA_URLS[$i]}"
    api PUT /v1/sys/unseal "{\"key\":\"$key\"}"
    expect 200 "HA node $i sys/unseal"
    [ "$i" != 0 ] || ha_wait_health 0 200 30
  done
  ha_wait_health 1 429 30
  ha_wait_health 2 429 30
  URL="${HA_URLS[0]}"
  ROOT="$root"
  api POST /v1/sys/mounts/secret '{"type":"kv","options":{"version":"2"}}'
  case "$STATUS" in 200 | 204) ;; *) die "HA: mount kv v2 at secret/: HTTP $STATUS: $BODY_OUT" ;; esac
  api POST /v1/secret/data/bench '{"data":{"password":"x"}}'
  expect 200 "HA: write secret/bench"
  make_policy_token
  export BENCH_TOKEN="$POLICY_TOKEN"
  # Through each standby too, before anything is measured; then a pause of twice the default
  # staleness bound, so that the standbys' replicas have seen the mount and serve reads.
  for i in 1 2; do
    URL="${HA_URLS[$i]}"
    api GET /v1/secret/data/bench
    expect 200 "HA: read secret/bench through standby $i"
  done
  sleep 1

  local first=${#ROWS[@]} hdr="X-Vault-Token: $POLICY_TOKEN"
  URL="${HA_URLS[0]}"
  run "HA: GET sys/health, active" 16 2 /v1/sys/health
  run "HA: KV v2 read, active" 16 2 /v1/secret/data/bench -H "$hdr"
  URL="${HA_URLS[1]}"
  run "HA: KV v2 read via a standby" 16 2 /v1/secret/data/bench -H "$hdr"
  run_parallel "HA: KV v2 read, 3 nodes taking reads" 16 /v1/secret/data/bench "${HA_URLS[@]}" -- -H "$hdr"
  URL="${HA_URLS[0]}"
  run "HA: KV v2 write, active" 16 2 /v1/secret/data/bench -s "$TMP/write.lua"
  URL="${HA_URLS[1]}"
  run "HA: KV v2 write via a standby" 16 2 /v1/secret/data/bench -s "$TMP/write.lua"

  say "HA: failover, kill -9 of the active node, then writes through a standby"
  URL="${HA_URLS[1]}"
  api POST /v1/secret/data/failover '{"data":{"n":"0"}}'
  expect 200 "HA: a write through a standby before the kill"
  local t0 t1 code tries=0
  t0="$(now_ns)"
  { kill -KILL "${HA_PIDS[0]}" && wait "${HA_PIDS[0]}"; } 2>/dev/null || true
  while :; do
    tries=$((tries + 1))
    code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 -X POST -H "X-Vault-Token: $root" \
      -H 'Content-Type: application/json' --data '{"data":{"n":"1"}}' "${HA_URLS[1]}/v1/secret/data/failover" || true)"
    [ "$code" = 200 ] && break
    [ $(($(now_ns) - t0)) -lt 60000000000 ] || die "HA: no write through a standby succeeded within 60 s of the kill"
    sleep 0.01
  done
  t1="$(now_ns)"
  HA_FAILOVER_MS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')"
  HA_FAILOVER_TRIES="$tries"

  echo
  echo "HA (issue 17): three nodes on one PostgreSQL (initdb'd here, loopback, durable), TLS, lock TTL 15 s."
  echo "Standbys serve KV reads themselves from their read replica (ha_standby_reads, the default) and forward"
  echo "writes to the active node over mutual TLS. All three nodes and PostgreSQL share this machine's cores,"
  echo "so three nodes taking reads cannot add CPU here: the row shows what standby reads cost, not scale-out."
  echo
  echo "| scenario | connections | req/s | p50 (ms) | p99 (ms) | % of the active's sys/health req/s | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  local floor r
  floor="$(field "HA: GET sys/health, active" 16 2)"
  for r in "${ROWS[@]:$first}"; do
    IFS='|' read -r -a f <<<"$r"
    printf '| %s | %s | %.0f | %s | %s | %s%% | %s |\n' \
      "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "${f[4]}" "$(pct "${f[2]}" "$floor")" "${f[5]}"
  done
  echo
  echo "- Failover: kill -9 of the active to the first acknowledged write through a standby: $HA_FAILOVER_MS ms ($HA_FAILOVER_TRIES attempts)"
  echo
  echo "One node on the same PostgreSQL (no HA, TLS, policy token), beside PostgreSQL's single-writer floor"
  echo "(pgbench, one client, a one-row INSERT per commit, synchronous_commit on):"
  echo
  echo "| scenario | connections | req/s | p50 (ms) | p99 (ms) | x PostgreSQL's floor | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for r in "${ROWS[@]:$pg_first:3}"; do
    IFS='|' read -r -a f <<<"$r"
    printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' \
      "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "${f[4]}" "$(ratio "${f[2]}" "$PG_FLOOR")" "${f[5]}"
  done
  echo
  echo "- PostgreSQL floor (pgbench -c1, one-row INSERT per commit): $PG_FLOOR commits/s"
  echo
  echo "Targets (issue 18, PostgreSQL storage):"
  local s ok rps
  for s in "KV v2 write" "token create" "secret lease create"; do
    rps="$(field "PostgreSQL: $s" 16 2)"
    ok="$(ge_ratio "$rps" "$PG_FLOOR" 3)"
    echo "- $(box "$ok") $s on PostgreSQL (durable) >= 3x PostgreSQL's single-writer commit rate at 16 connections: $(printf '%.0f' "$rps") req/s = $(ratio "$rps" "$PG_FLOOR")x of $PG_FLOOR ($(mark "$ok"))"
  done
  echo

  ha_stop
  HA_PIDS=()
  URL="$saved_url"
  ROOT="$saved_root"
  export BENCH_TOKEN="$saved_token"
}
