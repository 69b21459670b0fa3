#!/usr/bin/env bash
# Make Debian's PostgreSQL server binaries available for the storage tests
# (tests/pg_server.py starts a throwaway server from them). Idempotent and quiet;
# never fails the build: without PostgreSQL those tests skip and say why.
set -u
if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "postgres.sh: no apt-get; PostgreSQL tests will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "postgres.sh: not root and no passwordless sudo; PostgreSQL tests will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { timeout 300 $SUDO apt-get update -qq >/dev/null &&
       timeout 600 $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
  echo "postgres.sh: installing postgresql failed; PostgreSQL tests will skip" >&2
fi
exit 0
