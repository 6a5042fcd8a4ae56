#!/usr/bin/env bash
# A private, throwaway PostgreSQL 15 cluster for the test suite.
#
#   scripts/postgres.sh start DIR PORT   prints postgresql+psycopg://postgres@127.0.0.1:PORT/credence_test
#   scripts/postgres.sh stop DIR         stops the cluster and removes DIR
#
# DIR must not exist yet (its parents must be traversable by the postgres
# user: use a fresh path under /tmp, not a 0700 pytest directory). The
# cluster listens on 127.0.0.1 only, trusts loopback and its own socket in
# DIR, and runs with durability off: it holds test data only.
#
# initdb refuses to run as root, so as root the cluster belongs to the
# postgres user; as anyone else it belongs to that user. As root, missing
# server binaries are installed from the Debian package postgresql-15 unless
# CREDENCE_POSTGRES_NO_INSTALL=1. Progress goes to stderr; stdout carries only
# the URL.
set -euo pipefail

PG_MAJOR=15
PG_PACKAGE=postgresql-$PG_MAJOR
DATABASE=credence_test

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

find_bindir() {
  local candidate
  for candidate in /usr/lib/postgresql/$PG_MAJOR/bin /usr/lib/postgresql/*/bin; do
    if [[ -x $candidate/initdb && -x $candidate/pg_ctl ]]; then
      echo "$candidate"
      return 0
    fi
  done
  candidate=$(command -v initdb 2>/dev/null || true)
  if [[ -n $candidate && -x $(dirname "$candidate")/pg_ctl ]]; then
    dirname "$candidate"
    return 0
  fi
  return 1
}

install_server() {
  echo "postgres.sh: installing $PG_PACKAGE from the Debian packages" >&2
  # The package would create and start a "main" cluster of its own: not wanted.
  mkdir -p /etc/postgresql-common
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$PG_PACKAGE" >&2
}

bindir() {
  local found
  if found=$(find_bindir); then
    echo "$found"
    return 0
  fi
  if [[ $EUID -eq 0 && ${CREDENCE_POSTGRES_NO_INSTALL:-0} != 1 ]]; then
    install_server
    find_bindir && return 0
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin" \
    "or PATH: install the Debian package $PG_PACKAGE"
}

# Runs a command as the cluster's owner: postgres when we are root, else ourselves.
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir=$1 port=$2 bin data
  [[ $port =~ ^[0-9]+$ ]] || die "port must be a number, got '$port'"
  [[ ! -e $dir ]] || die "$dir exists already: give a fresh directory"
  bin=$(bindir)
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no postgres user to own the cluster (initdb refuses root)"
  fi
  mkdir -p "$dir"
  chmod 700 "$dir"
  [[ $EUID -ne 0 ]] || chown postgres: "$dir"
  as_owner test -w "$dir" ||
    die "the cluster owner cannot write $dir: are all its parent directories traversable?"
  data=$dir/data
  if ! as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  fi
  # Test cluster: fsync, synchronous commit and full-page writes are off,
  # trading crash safety (irrelevant for throwaway data) for speed. Listens
  # on loopback only; the Unix socket lives in DIR, not the system's run dir.
  if ! as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
    -o "-k $dir -h 127.0.0.1 -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2; then
    cat "$dir/server.log" >&2 || true
    die "the server did not start on 127.0.0.1:$port"
  fi
  local tries=0
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
    tries=$((tries + 1))
    if ((tries > 100)); then
      cat "$dir/server.log" >&2 || true
      die "the server on 127.0.0.1:$port did not become ready"
    fi
    sleep 0.1
  done
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DATABASE" >&2
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DATABASE"
}

stop() {
  local dir=$1 bin
  [[ -d $dir ]] || return 0
  if [[ -f $dir/data/postmaster.pid ]] && bin=$(find_bindir); then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 ||
      echo "postgres.sh: pg_ctl stop failed; removing $dir anyway" >&2
  fi
  rm -rf "$dir"
}

case ${1:-} in
  start)
    [[ $# -eq 3 ]] || die "usage: $0 start DIR PORT"
    start "$2" "$3"
    ;;
  stop)
    [[ $# -eq 2 ]] || die "usage: $0 stop DIR"
    stop "$2"
    ;;
  *)
    die "usage: $0 start DIR PORT | $0 stop DIR"
    ;;
esac
