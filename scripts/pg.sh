#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests, from Debian's packages.
#
#   scripts/pg.sh DIR [PORT]    start (initialising if needed) a cluster in DIR, listening on
#                               127.0.0.1:PORT (default 55432) only, trust auth; waits until it
#                               is ready and prints one line on stdout: its URL
#   scripts/pg.sh stop DIR      stop it (fast shutdown); nothing to do when it is not running
#   scripts/pg.sh restart DIR   restart it (fast shutdown), wait until ready, print the URL
#
# DIR holds the data dir (DIR/data, also the Unix socket directory), the server log
# (DIR/log) and the port (DIR/port). Starting a cluster that already runs just prints its URL.
# Run as root, the cluster runs as the `postgres` system user (initdb refuses root); DIR is
# handed to it. Everything but the URL goes to stderr.
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
READY_TIMEOUT_S=30

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 DIR [PORT] | $0 stop DIR | $0 restart DIR"
}

# Run a command as the cluster's user: `postgres` when we are root, ourselves otherwise.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_installed() {
  [ -x "$PG_BIN/initdb" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "$PG_BIN/initdb missing; install it: sudo apt-get install -y postgresql"
  echo "pg.sh: installing postgresql" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  [ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb still missing after installing postgresql"
}

url() {
  echo "postgres://postgres@127.0.0.1:$1/postgres"
}

wait_ready() {
  local port=$1 i
  for ((i = 0; i < READY_TIMEOUT_S * 2; i++)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then
      return 0
    fi
    sleep 0.5
  done
  echo "pg.sh: PostgreSQL on port $port not ready after ${READY_TIMEOUT_S}s; log tail:" >&2
  tail -n 20 "$DIR/log" >&2 || true
  return 1
}

running() {
  as_pg "$PG_BIN/pg_ctl" status -D "$DIR/data" >/dev/null 2>&1
}

stored_port() {
  [ -f "$DIR/port" ] || die "$DIR holds no cluster started by this script (no $DIR/port)"
  cat "$DIR/port"
}

# Absolute path of DIR (created when `create` is given), set as $DIR.
resolve_dir() {
  local d=$1 create=${2:-}
  [ -n "$d" ] || usage
  if [ -n "$create" ]; then
    mkdir -p "$d"
  fi
  [ -d "$d" ] || die "no such directory: $d"
  DIR=$(cd "$d" && pwd)
}

cmd_start() {
  local port=${1:-55432}
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad port: $port"
  ensure_installed
  if [ -f "$DIR/port" ]; then
    local have
    have=$(cat "$DIR/port")
    [ "$have" = "$port" ] || [ -z "${PORT_GIVEN:-}" ] ||
      die "the cluster in $DIR listens on port $have, not $port"
    port=$have
  fi
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$DIR"
      as_pg test -x "$DIR" || die "user postgres cannot reach $DIR (a parent directory is closed to it)"
    fi
    echo "pg.sh: initialising a cluster in $DIR/data" >&2
    as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --no-locale >&2
    # Appended settings override initdb's defaults. Only loopback TCP, so trust auth stays
    # local; the Unix socket lives in the data dir, not /var/run.
    as_pg tee -a "$DIR/data/postgresql.conf" >/dev/null <<EOF

# scripts/pg.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR/data'
max_connections = 200
EOF
    echo "$port" | as_pg tee "$DIR/port" >/dev/null
  fi
  if running; then
    echo "pg.sh: already running in $DIR" >&2
  else
    as_pg "$PG_BIN/pg_ctl" start -D "$DIR/data" -l "$DIR/log" -w -t "$READY_TIMEOUT_S" >&2 ||
      { tail -n 20 "$DIR/log" >&2 || true; die "PostgreSQL failed to start"; }
  fi
  wait_ready "$port" || die "PostgreSQL did not become ready"
  url "$port"
}

cmd_stop() {
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    echo "pg.sh: no cluster in $DIR" >&2
    return 0
  fi
  if running; then
    as_pg "$PG_BIN/pg_ctl" stop -D "$DIR/data" -m fast -w -t "$READY_TIMEOUT_S" >&2
  else
    echo "pg.sh: not running" >&2
  fi
}

cmd_restart() {
  local port
  port=$(stored_port)
  [ -f "$DIR/data/PG_VERSION" ] || die "no cluster in $DIR"
  if running; then
    as_pg "$PG_BIN/pg_ctl" restart -D "$DIR/data" -m fast -l "$DIR/log" -w -t "$READY_TIMEOUT_S" >&2 ||
      { tail -n 20 "$DIR/log" >&2 || true; die "PostgreSQL failed to restart"; }
  else
    as_pg "$PG_BIN/pg_ctl" start -D "$DIR/data" -l "$DIR/log" -w -t "$READY_TIMEOUT_S" >&2 ||
      { tail -n 20 "$DIR/log" >&2 || true; die "PostgreSQL failed to start"; }
  fi
  wait_ready "$port" || die "PostgreSQL did not become ready"
  url "$port"
}

[ $# -ge 1 ] || usage
case "$1" in
  stop)
    [ $# -eq 2 ] || usage
    if [ ! -d "$2" ]; then
      echo "pg.sh: no cluster in $2" >&2
      exit 0
    fi
    resolve_dir "$2"
    cd /
    cmd_stop
    ;;
  restart)
    [ $# -eq 2 ] || usage
    resolve_dir "$2"
    cd /
    cmd_restart
    ;;
  -h | --help) usage ;;
  *)
    [ $# -le 2 ] || usage
    resolve_dir "$1" create
    if [ $# -eq 2 ]; then PORT_GIVEN=1; fi
    cd / # the postgres user may not be able to enter the caller's directory
    cmd_start "${2:-55432}"
    ;;
esac
