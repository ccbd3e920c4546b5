#!/usr/bin/env bash
# The client side on this host (FUSE + loop frontend): rsiod and rsclientd on loopback, then
# rsconfig as the seed shows it (golden output of -q, -qvv, -lvv), attach, mkfs.ext4, mount,
# 200 MiB of checksummed files written and read back through RSIO, e2fsck clean, detach
# refused while mounted, a read-only grant refusing writes, a resize reaching the device,
# and an rsclientd restart attaching the volume again.
#
# Usage: attach_e2e.sh BUILD_DIR SEED_FILE (RSIO_KEEP=1 keeps the work directory and its logs).
# Needs root, /dev/fuse and loop devices; exits 77
# (CTest: skipped) with the reason otherwise.
set -euo pipefail
bin=${1:?usage: $0 BUILD_DIR SEED_FILE}
seed=${2:?usage: $0 BUILD_DIR SEED_FILE}
skip() { echo "SKIP: client attach: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mount, loop devices, mknod, mount)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
[ -c /dev/loop-control ] || skip "no loop devices (/dev/loop-control)"
[ -x "$bin/client/rsclientd" ] || skip "rsclientd was not built (libfuse3-dev missing)"

work=$(mktemp -d /dev/shm/rsio-client-XXXXXX)
rsiod_pid=""; client_pid=""
cleanup() {
  set +e
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null && wait "$client_pid" 2>/dev/null
  [ -n "$rsiod_pid" ] && kill "$rsiod_pid" 2>/dev/null && wait "$rsiod_pid" 2>/dev/null
  [ -n "${RSIO_KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "client attach: FAILED: $*" >&2
  echo "---- rsclientd log" >&2; tail -30 "$work/rsclientd.log" >&2 || true
  exit 1
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export RSIO_SOCKET=$work/rsiod.sock RSCLIENT_SOCKET=$work/rsclientd.sock
smgr=$bin/cli/smgr; rsadmin=$bin/cli/rsadmin; rsconfig=$bin/cli/rsconfig
dev=$work/dev/av0

"$bin/appliance/rsiod" --state-dir "$work/state" --init-pool-size 3g \
  --listen "127.0.0.1:$port" >"$work/rsiod.log" 2>&1 &
rsiod_pid=$!
for _ in $(seq 200); do "$smgr" -P >/dev/null 2>&1 && break; sleep 0.05; done
"$smgr" -c eisberg -S 1g
"$smgr" -c rovol -S 64m
"$rsadmin" -c tux -k Linuxtag >/dev/null
"$rsadmin" -g eisberg tux >/dev/null

start_client() {
  "$bin/client/rsclientd" --config "$work/rsclient.json" --dev-dir "$work/dev" \
    --run-dir "$work/run" --state "$work/attached.json" >>"$work/rsclientd.log" 2>&1 &
  client_pid=$!
  for _ in $(seq 200); do "$rsconfig" --show-config >/dev/null 2>&1 && return 0; sleep 0.05; done
  fail "rsclientd did not start"
}
start_client
"$rsconfig" --set-node tux --key Linuxtag
"$rsconfig" --add-server trainator --address "127.0.0.1:$port"

# Golden output: the seed's client transcripts (device paths under this test's dev dir).
expect() { sed -n "$1" "$seed" | sed "s|/dev/av0|$dev|"; }
diff <("$rsconfig" -q) <(expect 2,5p) || fail "rsconfig -q differs from the seed"
diff <("$rsconfig" -qvv) <(expect 7,12p) || fail "rsconfig -qvv differs from the seed"
"$rsconfig" -a
[ -b "$dev/eisberg" ] || fail "$dev/eisberg is not a block device"
# The state file names the server instance that acknowledges the device's writes (a device
# that outlives rsclientd needs it to know whether unflushed writes may be lost).
instance=$(sed -n 's/.*server instance \([0-9a-f]*\).*/\1/p' "$work/rsiod.log" | tail -1)
grep -q "\"server_instance\": \"$instance\"" "$work/attached.json" ||
  fail "attached.json does not name rsiod's instance $instance: $(cat "$work/attached.json")"
ls -l "$dev/eisberg"
diff <("$rsconfig" -lvv) <(expect 14,16p) || fail "rsconfig -lvv differs from the seed"
diff <("$rsconfig" -l) <(expect 14p) || fail "rsconfig -l differs from the seed"
echo "golden output of rsconfig -q, -qvv, -l, -lvv: identical to the seed"
# Options that belong to another action are usage errors (exit 2), not silently ignored.
for args in "-q eisberg" "-l -f" "-q --server trainator" "--show-config -v"; do
  rc=0
  "$rsconfig" $args 2>"$work/err" || rc=$?
  [ "$rc" -eq 2 ] && grep -Eq "belong|goes with" "$work/err" || fail "rsconfig $args: exit $rc, $(cat "$work/err")"
done

# File system, 200 MiB of checksummed files.
mkfs.ext4 -q "$dev/eisberg"
mkdir -p "$work/mnt"
mount "$dev/eisberg" "$work/mnt"
for i in $(seq 20); do
  head -c 10485760 /dev/urandom >"$work/mnt/file$i"
done
(cd "$work/mnt" && sha256sum file* >"$work/sums")
sync
if "$rsconfig" -d eisberg 2>"$work/err"; then fail "detach while mounted was not refused"; fi
grep -q "in use" "$work/err" || fail "detach refusal does not say why: $(cat "$work/err")"
echo "detach while mounted: refused ($(cat "$work/err"))"
umount "$work/mnt"
# Drop the loop device's cache so the read-back comes over RSIO.
blockdev --flushbufs "$dev/eisberg"
echo 3 >/proc/sys/vm/drop_caches
mount "$dev/eisberg" "$work/mnt"
(cd "$work/mnt" && sha256sum --quiet -c "$work/sums") || fail "checksums differ after read-back"
df -h "$work/mnt"
umount "$work/mnt"
e2fsck -fn "$dev/eisberg" >"$work/fsck" 2>&1 || { cat "$work/fsck"; fail "e2fsck found errors"; }
echo "200 MiB written and read back with matching checksums; e2fsck -fn clean"

# Resize on the server reaches the block device.
"$smgr" -r eisberg -S 2g
for _ in $(seq 200); do
  [ "$(blockdev --getsize64 "$dev/eisberg")" = "2147483648" ] && break
  sleep 0.05
done
[ "$(blockdev --getsize64 "$dev/eisberg")" = "2147483648" ] || fail "device size did not follow the resize"
echo "resize: $dev/eisberg is now $(blockdev --getsize64 "$dev/eisberg") bytes"

# rsclientd restart: the volume is attached again.
kill "$client_pid"; wait "$client_pid" || true; client_pid=""
[ ! -e "$dev/eisberg" ] || fail "device node left behind after rsclientd stopped"
start_client
for _ in $(seq 200); do [ -b "$dev/eisberg" ] && break; sleep 0.05; done
[ -b "$dev/eisberg" ] || fail "eisberg not attached again after restart"
mount -o ro "$dev/eisberg" "$work/mnt"
(cd "$work/mnt" && sha256sum --quiet -c "$work/sums") || fail "checksums differ after restart"
umount "$work/mnt"
echo "rsclientd restart: eisberg attached again, data intact"
"$rsconfig" -d eisberg
[ ! -e "$dev/eisberg" ] || fail "device node left after detach"

# A read-only grant gives a read-only device.
"$rsadmin" -g rovol tux --read-only >/dev/null
"$rsconfig" -a rovol
[ "$(blockdev --getro "$dev/rovol")" = "1" ] || fail "rovol is not read-only"
if dd if=/dev/zero of="$dev/rovol" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
  fail "a write to the read-only volume succeeded"
fi
"$rsconfig" -lvv | grep -q "read-only" || fail "rsconfig -lvv does not say read-only"
"$rsconfig" -d rovol
echo "read-only grant: device read-only, writes refused"

# A volume with 4 KiB blocks gives a device with 4 KiB logical blocks.
"$smgr" -c big4k -S 64m --block-size 4096
"$rsadmin" -g big4k tux >/dev/null
"$rsconfig" -a big4k
[ "$(blockdev --getss "$dev/big4k")" = "4096" ] ||
  fail "big4k has logical block size $(blockdev --getss "$dev/big4k"), not 4096"
"$rsconfig" -l --json | grep -q '"block_size": 4096' || fail "rsconfig -l --json does not say 4096"
dd if=/dev/urandom of="$work/4k" bs=4096 count=16 status=none
dd if="$work/4k" of="$dev/big4k" bs=4096 count=16 oflag=direct status=none
cmp <(dd if="$dev/big4k" bs=4096 count=16 iflag=direct status=none) "$work/4k" ||
  fail "big4k did not read back what was written"
"$rsconfig" -d big4k
echo "4 KiB volume: device logical block size 4096, data read back"
echo "client attach: PASS"
