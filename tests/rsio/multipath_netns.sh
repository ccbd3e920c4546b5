#!/usr/bin/env bash
# Multi-path failover in network namespaces: a client namespace reaches rsiod over two veth
# pairs (two paths). rsio-load writes and verifies continuously while one path at a time is
# cut and restored, CUTS times, alternating iptables DROP and link down. Passes when the load
# saw zero I/O errors and zero verification errors; reports the longest stall.
#
# Usage: multipath_netns.sh BUILD_DIR [CUTS]. Needs root, ip netns and iptables; exits 77
# (CTest: skipped) with the reason otherwise.
set -euo pipefail
bin=${1:?usage: $0 BUILD_DIR [CUTS]}
cuts=${2:-20}
skip() { echo "SKIP: multipath_netns: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces and iptables"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"
command -v iptables >/dev/null || skip "iptables is not installed"

id=$$
ns=rsmp$id
h1=rsa$id; n1=rsb$id; h2=rsc$id; n2=rsd$id
work=$(mktemp -d /dev/shm/rsio-mp-XXXXXX)
rsiod_pid=""; load_pid=""
cleanup() {
  set +e
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  [ -n "$rsiod_pid" ] && kill "$rsiod_pid" 2>/dev/null && wait "$rsiod_pid" 2>/dev/null
  iptables -D INPUT -i "$h1" -j DROP 2>/dev/null
  iptables -D OUTPUT -o "$h1" -j DROP 2>/dev/null
  ip link del "$h1" 2>/dev/null
  ip link del "$h2" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create a network namespace"
ip link add "$h1" type veth peer name "$n1" || skip "cannot create veth pairs"
ip link add "$h2" type veth peer name "$n2"
ip link set "$n1" netns "$ns"
ip link set "$n2" netns "$ns"
ip addr add 10.231.1.1/24 dev "$h1"
ip addr add 10.231.2.1/24 dev "$h2"
ip link set "$h1" up
ip link set "$h2" up
ip -n "$ns" addr add 10.231.1.2/24 dev "$n1"
ip -n "$ns" addr add 10.231.2.2/24 dev "$n2"
ip -n "$ns" link set lo up
ip -n "$ns" link set "$n1" up
ip -n "$ns" link set "$n2" up

port=5000
export RSIO_SOCKET=$work/rsiod.sock
"$bin/appliance/rsiod" --state-dir "$work/state" --init-pool-size 1g \
  --listen "10.231.1.1:$port" --listen "10.231.2.1:$port" >"$work/rsiod.log" 2>&1 &
rsiod_pid=$!
for _ in $(seq 200); do
  grep -q "ready:" "$work/rsiod.log" && break
  kill -0 "$rsiod_pid" 2>/dev/null || { cat "$work/rsiod.log"; exit 1; }
  sleep 0.05
done
"$bin/cli/smgr" -c mpvol -S 64m
"$bin/cli/rsadmin" -c tux -k mpkey >/dev/null
"$bin/cli/rsadmin" -g mpvol tux >/dev/null

# Connected paths of tux, from rsadmin's JSON.
paths() {
  "$bin/cli/rsadmin" -l --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["sessions"]
print(sum(1 for x in s if x["client"] == "tux" for p in x["paths"] if p["state"] == "connected"))'
}
# Waits (polling, up to 30 s) until tux has exactly N connected paths.
wait_paths() {
  local want=$1
  for _ in $(seq 300); do
    [ "$(paths)" = "$want" ] && return 0
    sleep 0.1
  done
  echo "multipath_netns: tux never had $want path(s); rsadmin -lvvv:" >&2
  "$bin/cli/rsadmin" -lvvv >&2
  return 1
}

ip netns exec "$ns" "$bin/rsio/rsio-load" -s "10.231.1.1:$port@10.231.1.2" \
  -s "10.231.2.1:$port@10.231.2.2" -n tux -k mpkey -V mpvol -m verify -q 16 \
  --stop-file "$work/stop" --json >"$work/load.json" 2>"$work/load.err" &
load_pid=$!
wait_paths 2
"$bin/cli/rsadmin" -lvvv

t0=$(date +%s)
for i in $(seq "$cuts"); do
  if [ $((i % 2)) -eq 1 ]; then
    how="iptables DROP on path 1"
    iptables -I INPUT -i "$h1" -j DROP
    iptables -I OUTPUT -o "$h1" -j DROP
    wait_paths 1
    iptables -D INPUT -i "$h1" -j DROP
    iptables -D OUTPUT -o "$h1" -j DROP
  else
    how="link down on path 2"
    ip link set "$h2" down
    wait_paths 1
    ip link set "$h2" up
  fi
  wait_paths 2
  echo "cut $i/$cuts ($how): path dropped and restored"
done
echo "cuts took $(($(date +%s) - t0)) s"
touch "$work/stop"
rc=0
wait "$load_pid" || rc=$?
load_pid=""
echo "rsio-load: $(cat "$work/load.json")"
if [ "$rc" -ne 0 ]; then
  echo "multipath_netns: FAILED: rsio-load exited with $rc" >&2
  cat "$work/load.err" >&2
  exit 1
fi
python3 - "$work/load.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
bad = {k: j[k] for k in ("errors", "verify_errors", "final_check_errors") if j[k] != 0}
if bad:
    sys.exit(f"multipath_netns: FAILED: {bad}")
if j["path_failures"] == 0:
    sys.exit("multipath_netns: FAILED: no path failure was seen; the cuts did not reach the client")
print(f"multipath_netns: PASS: {j['ios']} verified I/Os, 0 errors, {j['path_failures']} path "
      f"failures, {j['fences']} fences, {j['reissued']} re-issued requests, "
      f"max stall {j['max_stall_ms']} ms")
EOF
