#!/usr/bin/env bash
# The whole test suite, from a fresh clone: makes .venv, installs, lints, type-checks, then runs
# the tests on SQLite and, when PostgreSQL server binaries are installed, again on a throwaway
# PostgreSQL server (scripts/postgres.sh). Extra arguments go to both pytest runs.
# RECONCILE_SKIP_POSTGRES=1 skips the PostgreSQL run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# The console's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${RECONCILE_TEST_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium for the browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null 2>&1 || echo "!! could not install chromium: the BROWSER TESTS WILL BE SKIPPED"
  else
    echo "!! no chromium and no way to install it: the BROWSER TESTS WILL BE SKIPPED"
  fi
fi
.venv/bin/ruff check .
.venv/bin/mypy

failed=0
started=$SECONDS
echo "== tests on SQLite"
env -u RECONCILE_TEST_POSTGRES_URL -u RECONCILE_TEST_DATABASE_URL \
  .venv/bin/python -m pytest -q "$@" || failed=1
echo "== SQLite run: $((SECONDS - started)) s"

if [ "${RECONCILE_SKIP_POSTGRES:-}" = 1 ]; then
  echo "RECONCILE_SKIP_POSTGRES=1: skipping the PostgreSQL run"
elif bindir=$(bash scripts/postgres.sh bindir 2>/dev/null); then
  echo "== tests on PostgreSQL ($bindir)"
  started=$SECONDS
  server=$(bash scripts/postgres.sh start)
  eval "$server"
  # Stop the server however this script ends.
  trap 'bash scripts/postgres.sh stop "$RECONCILE_TEST_POSTGRES_DIR"' EXIT
  trap 'exit 130' INT TERM
  env -u RECONCILE_TEST_DATABASE_URL .venv/bin/python -m pytest -q "$@" || failed=1
  echo "== PostgreSQL run: $((SECONDS - started)) s"
else
  echo "PostgreSQL binaries not found: skipping the PostgreSQL run"
fi
exit $failed
