#!/usr/bin/env bash
# The main job: installs what RSIO needs, builds it, and runs the server side of the seed
# walk-through on one machine — an appliance on file-backed storage (a 4 GiB sparse file in
# ./state/demo), two existing clients, then: list clients, register tux, create volume
# eisberg, grant it to tux, list grants. Node tux then connects over RSIO on loopback
# (rsio-load, the client library's load tool) and writes and verifies data on eisberg while
# rsadmin shows its session, path and open volume. Finally the appliance restarts and shows
# that everything persisted. The block device /dev/av0/eisberg comes with rsclientd.
#
# Environment: RSIO_DEMO_DIR (default ./state/demo) — removed and recreated on each run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/setup-deps.sh
else
  echo "demo: not root, skipping package installation (run scripts/setup-deps.sh as root once)"
fi
scripts/build.sh release

bin=$root/build/release
dir=${RSIO_DEMO_DIR:-$root/state/demo}
export RSIO_SOCKET=$dir/rsiod.sock
export PATH=$bin/appliance:$bin/cli:$bin/rsio:$PATH
port=${RSIO_DEMO_PORT:-5000}

rm -rf "$dir"
mkdir -p "$dir"
daemon_pid=
stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  kill -TERM "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}
trap stop_daemon EXIT

start_daemon() {
  rsiod --state-dir "$dir/state" --socket "$RSIO_SOCKET" "$@" >>"$dir/rsiod.log" 2>&1 &
  daemon_pid=$!
  # Wait (up to 20 s) until the API answers.
  for _ in $(seq 200); do
    if smgr -P >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "demo: rsiod did not become ready; its log:" >&2
  cat "$dir/rsiod.log" >&2
  exit 1
}

show() {
  echo "srv# $*"
  "$@"
}

echo "== starting rsiod on a 4 GiB file-backed default pool in $dir/state"
start_daemon --init-pool-size 4g --listen "127.0.0.1:$port"
smgr -P
echo
echo "== the appliance already serves clients trainee and dummy:"
rsadmin -c trainee -k 0139dfX982 >/dev/null
rsadmin -c dummy -k 1234567890 >/dev/null
smgr -c testvol -S 256m
smgr -c probevol -S 512m
rsadmin -g testvol trainee >/dev/null
rsadmin -g probevol dummy >/dev/null
rsadmin -g probevol trainee >/dev/null
echo
echo "== the seed's server-side walk-through"
show rsadmin -q
echo
show rsadmin -qv
echo
show rsadmin -c tux -k Linuxtag
echo
show rsadmin -qv
echo
show smgr -c eisberg -S 1g
echo
show rsadmin -g eisberg tux
echo
show rsadmin -qa
echo
show smgr -qv
echo
show rsadmin -qA
echo
echo "== tux connects over RSIO (127.0.0.1:$port) and writes and verifies eisberg"
echo "clt# rsio-load -s 127.0.0.1:$port -n tux -k Linuxtag --list"
rsio-load -s "127.0.0.1:$port" -n tux -k Linuxtag --list
rm -f "$dir/load.stop"
rsio-load -s "127.0.0.1:$port" -s "127.0.0.1:$port" -n tux -k Linuxtag -V eisberg -m verify \
  -t 60 --stop-file "$dir/load.stop" >"$dir/load.out" 2>&1 &
load_pid=$!
# Wait (up to 20 s) until tux has eisberg open.
for _ in $(seq 200); do
  rsadmin -qA | grep -q " tux " && break
  kill -0 "$load_pid" 2>/dev/null || break
  sleep 0.1
done
show rsadmin -lvvv
echo
show rsadmin -qA
touch "$dir/load.stop"
wait "$load_pid"
echo
echo "clt# rsio-load -s 127.0.0.1:$port -s 127.0.0.1:$port -n tux -k Linuxtag -V eisberg -m verify"
cat "$dir/load.out"
echo
echo "== restarting rsiod: everything above is persisted in $dir/state/rsio.db"
stop_daemon
start_daemon --listen "127.0.0.1:$port"
show rsadmin -qa
show smgr -q
stop_daemon
echo
echo "demo: done. Daemon log: $dir/rsiod.log"
