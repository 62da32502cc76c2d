# Sourced by scripts/bench, scripts/cost and scripts/symbol-order: `free_port` prints a TCP port
# on 127.0.0.1 that nothing listens on. It is chosen below the kernel's ephemeral range: a port
# from that range can become the local end of an outgoing connection (wrk's, or a server's to
# PostgreSQL) between this check and the listener binding it.
free_port() {
  local p i lo
  lo="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)"
  [ "${lo:-0}" -gt 12000 ] || lo=32768
  for i in $(seq 1 100); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "found no free port on 127.0.0.1" >&2
  return 1
}
