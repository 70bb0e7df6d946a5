#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks.
#
#   scripts/postgres.sh bindir        print the server binaries' directory (exit 1 when absent)
#   scripts/postgres.sh start         start a server; prints `export` lines to eval:
#                                       RECONCILE_TEST_POSTGRES_URL  admin URL (database "postgres")
#                                       RECONCILE_TEST_POSTGRES_DIR  what `stop` needs
#   scripts/postgres.sh stop DIR      stop that server and delete its data
#   scripts/postgres.sh pause DIR     stop that server, keeping its data (an outage, for tests)
#   scripts/postgres.sh resume DIR    start a paused server again, on the same port
#
# The server never runs as root: as root it runs as the `postgres` system user (created by the
# Debian packages) or, failing that, an unprivileged `reconcile-pg` user made for the purpose.
# Data lives in a fresh temporary directory; fsync is off (tests only). It listens on 127.0.0.1
# on a free port and on a unix socket inside that directory; authentication is `trust`.
set -euo pipefail

find_bindir() {
  if [ -n "${RECONCILE_PG_BINDIR:-}" ] && [ -x "$RECONCILE_PG_BINDIR/initdb" ]; then
    echo "$RECONCILE_PG_BINDIR"; return 0
  fi
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"; return 0
    fi
  fi
  # Debian/Ubuntu keep each major version apart; take the newest.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"; return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

# The user the server runs as, and a prefix that runs a command as that user.
server_user() {
  if [ "$(id -u)" != 0 ]; then
    id -un; return
  fi
  if id postgres >/dev/null 2>&1; then
    echo postgres; return
  fi
  if ! id reconcile-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      reconcile-pg >&2
  fi
  echo reconcile-pg
}

as_user() {
  local user=$1; shift
  if [ "$(id -un)" = "$user" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$user" -- "$@"
  else
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bindir user base port attempt
  bindir=$(find_bindir) || { echo "PostgreSQL binaries not found" >&2; exit 1; }
  user=$(server_user)
  base=$(mktemp -d "${RECONCILE_PG_TMPDIR:-/tmp}/reconcile-pg.XXXXXX")
  chmod 700 "$base"
  chown "$user" "$base"
  as_user "$user" "$bindir/initdb" --pgdata="$base/data" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync >"$base/initdb.log" 2>&1 \
    || { cat "$base/initdb.log" >&2; rm -rf "$base"; exit 1; }
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if run_server "$bindir" "$user" "$base" "$port"; then
      echo "$port" >"$base/port"
      echo "export RECONCILE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
      echo "export RECONCILE_TEST_POSTGRES_DIR=$base"
      return 0
    fi
    echo "PostgreSQL did not start on port $port (attempt $attempt)" >&2
  done
  cat "$base/server.log" >&2 || true
  rm -rf "$base"
  exit 1
}

run_server() {
  local bindir=$1 user=$2 base=$3 port=$4
  as_user "$user" "$bindir/pg_ctl" --pgdata="$base/data" --log="$base/server.log" --wait \
    --timeout=60 --silent \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$base" \
    -o "-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    -o "-c max_connections=300 -c shared_buffers=128MB" \
    start >/dev/null 2>&1
}

pause() {
  local base=${1:?usage: postgres.sh pause DIR} bindir user
  bindir=$(find_bindir)
  user=$(stat -c %U "$base/data")
  as_user "$user" "$bindir/pg_ctl" --pgdata="$base/data" --mode=fast --wait --silent stop
}

resume() {
  local base=${1:?usage: postgres.sh resume DIR} bindir user
  bindir=$(find_bindir)
  user=$(stat -c %U "$base/data")
  run_server "$bindir" "$user" "$base" "$(cat "$base/port")" \
    || { tail -20 "$base/server.log" >&2; exit 1; }
}

stop() {
  local base=${1:?usage: postgres.sh stop DIR} bindir user
  [ -d "$base/data" ] || { rm -rf "$base"; return 0; }
  bindir=$(find_bindir)
  user=$(stat -c %U "$base/data")
  as_user "$user" "$bindir/pg_ctl" --pgdata="$base/data" --mode=immediate --wait --silent \
    stop >/dev/null 2>&1 || true
  rm -rf "$base"
}

case "${1:-}" in
  bindir) find_bindir ;;
  start) start ;;
  stop) shift; stop "$@" ;;
  pause) shift; pause "$@" ;;
  resume) shift; resume "$@" ;;
  *) echo "usage: $0 bindir | start | stop DIR | pause DIR | resume DIR" >&2; exit 2 ;;
esac
