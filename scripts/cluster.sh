#!/usr/bin/env bash
# Local Postgres clusters for pg_cep, owned by user postgres, on their own ports and sockets.
#   scripts/cluster.sh start NAME PORT [extra postgresql.conf lines...]
#   scripts/cluster.sh stop NAME
#   scripts/cluster.sh dir NAME         (prints the data directory)
# Data lives in .pgcep/NAME under the project. If user postgres cannot reach the project folder
# (a clone under /root, say), it lives in /tmp/pg_cep-$UID/NAME and .pgcep/NAME links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=$1 name=$2
base=$PWD/.pgcep
mkdir -p "$base"
as_pg() { runuser -u postgres -- "$@"; }

datadir() {
    local d=$base/$name
    if [ -L "$d" ]; then readlink -f "$d"; return; fi
    if as_pg test -x "$base" 2>/dev/null && as_pg test -x "$PWD" 2>/dev/null; then
        echo "$d"
    else
        local t=/tmp/pg_cep-$(id -u)/$name
        mkdir -p "$(dirname "$t")"; chmod 755 "$(dirname "$t")"
        ln -sfn "$t" "$d"
        echo "$t"
    fi
}

case $cmd in
dir) datadir ;;
start)
    port=$3; shift 3
    d=$(datadir)
    if [ ! -s "$d/PG_VERSION" ]; then
        mkdir -p "$d"; chown postgres "$d"; chmod 700 "$d"
        as_pg "$PGBIN/initdb" -D "$d" -U postgres -A trust --no-sync >/dev/null
        {
            echo "port = $port"
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$d'"
            echo "shared_preload_libraries = 'pg_cep'"
            echo "fsync = off"
            echo "log_min_messages = warning"
            for line in "$@"; do echo "$line"; done
        } >> "$d/postgresql.conf"
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
        echo "cluster $name already running on port $port"
    else
        as_pg "$PGBIN/pg_ctl" -D "$d" -l "$d/server.log" -w -t 60 start >/dev/null
        echo "cluster $name started on port $port (data: $d)"
    fi
    ;;
stop)
    d=$(datadir)
    if [ -s "$d/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1; then
        as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
        echo "cluster $name stopped"
    fi
    ;;
restart)
    d=$(datadir)
    as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w -l "$d/server.log" restart >/dev/null
    ;;
*) echo "usage: $0 start|stop|restart|dir NAME [PORT]" >&2; exit 2 ;;
esac
