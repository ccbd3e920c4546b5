#!/usr/bin/env bash
# Power-cut durability: the appliance's pool devices are disks with a volatile write cache
# (nbdkit's cache filter in writeback mode over a file on /dev/shm, made a regular file by a
# FUSE NBD client: nbdfuse, or qemu-storage-daemon's FUSE export). A "power cut" stops rsiod,
# kills the disks (their cache, everything not flushed, is gone) and rsiod, then starts the
# disks again on their backing images and a new rsiod on the same state directory, while the
# client side keeps running: the client library holds its I/O (up to 30 s) and reconnects.
# Whatever the client was told is durable must read back afterwards.
#
# Modes (all by default; docs/durability-testing.md describes them and how to read the output):
#   device-osync  rsclientd's FUSE + loop device, fio O_DIRECT|O_SYNC 4k random writes
#   device-fsync  the same device, fio O_DIRECT 4k random writes with an fsync every 16
#   engine-fsync  fio through librsio_fio.so, 4k random writes, iodepth 16, FLUSH every 16
#   pgbench       PostgreSQL 15 on ext4 on the device, pgbench; then crash recovery,
#                 pg_amcheck, the TPC-B balance invariant and e2fsck -fn
#   mirror        engine-fsync on a 2-way mirror over two volatile disks, both cut together;
#                 resync, verify and a scrub that must find the legs identical
#   control       engine-fsync on disks that ignore FLUSH (cache=unsafe): must LOSE data,
#                 otherwise the check has no teeth and the test fails
# fio writes until the harness stops it, and a second fio pass (verify_only) reads back every
# block the first one wrote, so the cut schedule does not depend on the machine's speed.
#
# Usage: powercut.sh BUILD_DIR [MODE...] (or RSIO_DURABILITY_MODES="MODE ...").
# Knobs (environment):
#   RSIO_CUTS_PER_MODE   cuts under load in each mode but the control (default 10, 6, 10, 6, 6)
#   RSIO_CONTROL_CUTS    cuts under load in the control (2)
#   RSIO_FINAL_CUT       1: one more cut once the load stopped and flushed (default); 0: none
#   RSIO_TEST_SEED       replays a cut schedule (printed at the start)
#   RSIO_CUT_DELAY_MS    random I/O time before each cut, "LO-HI" (300-2500)
#   RSIO_NBD_LOG         1: nbdkit logs every request of every disk (default); 0: off
#   RSIO_FUSE_EXPORT     nbdfuse (default), or qsd: qemu-storage-daemon, whose FUSE export in
#                        qemu 7.2 corrupts O_DIRECT writes over 1 MiB (the disk self-test fails)
#   RSIO_PGBENCH_SCALE   pgbench -s (5); RSIO_PG_BIN: /usr/lib/postgresql/15/bin
#   RSIO_KEEP=1          keep the work directory (a failed run keeps its logs anyway)
# Needs root, /dev/fuse, nbdkit, nbdfuse (or qemu-storage-daemon), fio, and for the modes that
# use them loop devices and rsclientd, the fio engine, PostgreSQL 15; exits 77 (CTest: skipped)
# with the reason otherwise. Exit 1 when any mode fails.
set -euo pipefail
shopt -s inherit_errexit
bin=${1:?usage: $0 BUILD_DIR [MODE...]}
shift
bin=$(cd "$bin" && pwd)

all_modes=(device-osync device-fsync engine-fsync pgbench mirror control)
declare -A default_cuts=([device-osync]=10 [device-fsync]=6 [engine-fsync]=10 [pgbench]=6
                         [mirror]=6)
if [ $# -gt 0 ]; then
  modes=("$@")
elif [ -n "${RSIO_DURABILITY_MODES:-}" ]; then
  read -ra modes <<<"$RSIO_DURABILITY_MODES"
else
  modes=("${all_modes[@]}")
fi
for mode in "${modes[@]}"; do
  case " ${all_modes[*]} " in
    *" $mode "*) ;;
    *) echo "powercut: unknown mode '$mode'; modes: ${all_modes[*]}" >&2; exit 2 ;;
  esac
done
uses() {  # MODE...: true when one of them was selected
  local a b
  for a in "$@"; do for b in "${modes[@]}"; do [ "$a" = "$b" ] && return 0; done; done
  return 1
}

seed=${RSIO_TEST_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
[[ $seed =~ ^[0-9]+$ ]] || { echo "powercut: RSIO_TEST_SEED must be a number" >&2; exit 2; }
final_cut=${RSIO_FINAL_CUT:-1}
delay_range=${RSIO_CUT_DELAY_MS:-300-2500}
delay_lo_ms=${delay_range%-*}
delay_hi_ms=${delay_range#*-}
nbd_log=${RSIO_NBD_LOG:-1}
fuse_export=${RSIO_FUSE_EXPORT:-nbdfuse}
case $fuse_export in
  nbdfuse | qsd) ;;
  *) echo "powercut: RSIO_FUSE_EXPORT must be nbdfuse or qsd" >&2; exit 2 ;;
esac
pg_bin=${RSIO_PG_BIN:-/usr/lib/postgresql/15/bin}
pg_scale=${RSIO_PGBENCH_SCALE:-5}
engine=$bin/rsio/librsio_fio.so

# ---- What the machine must have ------------------------------------------------------------
skip() { echo "SKIP: powercut: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mounts, loop devices, mount)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
for tool in nbdkit fio python3 losetup; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/setup-deps.sh installs it)"
done
filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
for f in cache log; do
  [ -e "$filterdir/nbdkit-$f-filter.so" ] || skip "nbdkit has no $f filter ($filterdir)"
done
if [ "$fuse_export" = qsd ]; then
  command -v qemu-storage-daemon >/dev/null ||
    skip "qemu-storage-daemon is not installed (apt-get install qemu-system-common)"
  qemu-storage-daemon --help 2>&1 | grep -q 'type=\]fuse' ||
    skip "this qemu-storage-daemon has no FUSE export (qemu built without fuse)"
else
  command -v nbdfuse >/dev/null || skip "nbdfuse is not installed (apt-get install libnbd-bin)"
fi
for b in appliance/rsiod cli/smgr cli/rsadmin; do
  [ -x "$bin/$b" ] || skip "$bin/$b was not built"
done
if uses device-osync device-fsync pgbench; then
  [ -c /dev/loop-control ] || skip "no loop devices (/dev/loop-control) for rsclientd's FUSE frontend"
  [ -x "$bin/client/rsclientd" ] || skip "rsclientd was not built (libfuse3-dev missing)"
  [ -x "$bin/cli/rsconfig" ] || skip "rsconfig was not built"
fi
if uses engine-fsync mirror control; then
  [ -e "$engine" ] || skip "the fio engine $engine was not built (scripts/fio-source.sh, then build)"
fi
if uses pgbench; then
  for b in initdb pg_ctl postgres pgbench pg_amcheck psql; do
    [ -x "$pg_bin/$b" ] || skip "PostgreSQL 15 is not installed ($pg_bin/$b missing; apt-get install postgresql-15)"
  done
  id postgres >/dev/null 2>&1 || skip "no 'postgres' user to run PostgreSQL as"
  for tool in mkfs.ext4 e2fsck setpriv; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
  done
fi

work=$(mktemp -d /dev/shm/rsio-powercut-XXXXXX)
chmod 755 "$work"  # PostgreSQL runs as 'postgres' below it
cleanup_all() {
  if [ -n "${RSIO_KEEP:-}" ]; then
    echo "powercut: kept $work"
  elif [ -n "${keep_logs:-}" ]; then
    # Logs of a failed run stay; the disk images and caches do not.
    find "$work" -name image -type f -delete 2>/dev/null || true
    echo "powercut: logs kept in $work (RSIO_KEEP=1 keeps the disk images too)"
  else
    rm -rf "$work"
  fi
}
trap cleanup_all EXIT
interrupted=""; mode_pid=""
on_signal() {
  interrupted=1
  if [ -n "$mode_pid" ]; then kill -TERM "$mode_pid" 2>/dev/null; else exit 130; fi
}
trap on_signal INT TERM

# ---- Per-mode state (each mode runs in a subshell of its own) -------------------------------
mode=""; m=""; port=""; disk_cache=writeback; ndisks=0
rsiod_pid=""; client_pid=""; load_pid=""; pg_data=""; fs_mnt=""
declare -a nbd_pid=() fuse_pid=()
starts=0  # rsiod start-ups in this mode

log() { echo "$mode: $*"; }
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; NOW_MS=$((t / 1000)); }
alive() {  # PID: running and not a zombie
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $s != Z* ]]
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
fail() {
  echo "$mode: FAILED: $*" >&2
  [ -z "$m" ] || [ -f "$m/result" ] || result FAIL - - "$*"
  exit 1
}
# wait_until SECONDS WHAT CMD...: polls CMD every 50 ms until it succeeds; fails the mode after
# SECONDS with "timed out waiting for WHAT".
wait_until() {
  local limit_s=$1 what=$2 deadline
  shift 2
  now_ms
  deadline=$((NOW_MS + limit_s * 1000))
  until "$@"; do
    now_ms
    [ "$NOW_MS" -lt "$deadline" ] || fail "timed out after ${limit_s}s waiting for $what"
    sleep 0.05
  done
}
# reap PID SECONDS: waits for a process that was sent a signal to be gone (SIGKILL after
# SECONDS). The daemons are disowned: bash still reaps them, without job notices.
# A process stuck in I/O (the client holds it up to 30 s) may outlive its SIGKILL: reap then
# returns 1 without waiting further.
reap() {
  local pid=$1 limit_s=${2:-10} i
  [ -n "$pid" ] || return 0
  for ((i = 0; i < limit_s * 20; i++)); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    for ((i = 0; i < limit_s * 20; i++)); do alive "$pid" || break; sleep 0.05; done
  fi
  alive "$pid" && return 1
  wait "$pid" 2>/dev/null || true
}
stop_proc() {  # PID: SIGTERM (SIGCONT first, it may be stopped), then SIGKILL after 10 s
  [ -n "$1" ] || return 0
  kill -CONT "$1" 2>/dev/null || true
  kill -TERM "$1" 2>/dev/null || true
  reap "$1" 10
}
# is_mounted PATH: from the mount table (stat fails on a FUSE mount whose server is gone).
is_mounted() { awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo; }
unmount_fuse() {  # MOUNTPOINT: a FUSE export whose server was killed stays mounted, dead
  is_mounted "$1" || return 0
  umount "$1" 2>/dev/null || umount -l "$1"
}

# ---- The volatile disks ---------------------------------------------------------------------
# Disk I lives in $m/diskI: image (the backing file: what survives a cut), nbdkit serving it
# through its cache filter on nbd.sock, and a FUSE layer that makes the NBD disk a regular file,
# disk_file I, which is the pool device:
#   nbdfuse (default)  libnbd's FUSE client: mnt/disk. fdatasync on it sends NBD FLUSH.
#   qsd                qemu-storage-daemon --blockdev driver=nbd --export type=fuse: dev. Only
#                      with a qemu whose FUSE export copies write buffers: 7.2 (Debian 12)
#                      corrupts O_DIRECT writes over 1 MiB (the self-test below catches it).
disk_file() {
  if [ "$fuse_export" = qsd ]; then echo "$m/disk$1/dev"; else echo "$m/disk$1/mnt/disk"; fi
}
disk_mountpoint() {
  if [ "$fuse_export" = qsd ]; then echo "$m/disk$1/dev"; else echo "$m/disk$1/mnt"; fi
}
# disk_start I: nbdkit (cache filter in $disk_cache mode) on disk I's image, then the FUSE layer.
disk_start() {
  local i=$1 d=$m/disk$1 logfilter=() logparams=()
  rm -f "$d/nbdkit.pid" "$d/fuse.pid" "$d/nbd.sock"  # a killed nbdkit leaves its socket
  if [ "$nbd_log" = 1 ]; then
    # The outermost filter: it logs the requests as the FUSE layer sends them (Flush lines).
    logfilter=(--filter=log)
    logparams=(logfile="$d/nbd-requests.log" logappend=true)
  fi
  # The cache lives in a deleted temporary file under TMPDIR: gone with the process.
  TMPDIR=$d/tmp nbdkit --foreground --unix "$d/nbd.sock" --pidfile "$d/nbdkit.pid" \
    "${logfilter[@]}" --filter=cache file "$d/image" cache="$disk_cache" "${logparams[@]}" \
    >>"$d/nbdkit.log" 2>&1 &
  nbd_pid[i]=$!
  disown "${nbd_pid[i]}"  # killed on purpose: no "Killed" job notices from bash
  wait_until 10 "nbdkit of disk $i" disk_nbd_ready "$i"
  if [ "$fuse_export" = qsd ]; then
    # cache.direct=off and cache.no-flush=off are the defaults, spelled out: the nbd driver
    # keeps no cache and forwards every flush (fdatasync on the FUSE file) as NBD FLUSH.
    qemu-storage-daemon \
      --blockdev "driver=nbd,node-name=disk$i,server.type=unix,server.path=$d/nbd.sock,cache.direct=off,cache.no-flush=off" \
      --export "type=fuse,id=fuse$i,node-name=disk$i,mountpoint=$d/dev,writable=on" \
      --pidfile "$d/fuse.pid" >>"$d/fuse.log" 2>&1 &
  else
    # One connection: every request and flush of the disk in one NBD stream.
    nbdfuse -C 1 -P "$d/fuse.pid" "$d/mnt/disk" --unix "$d/nbd.sock" >>"$d/fuse.log" 2>&1 &
  fi
  fuse_pid[i]=$!
  disown "${fuse_pid[i]}"
  wait_until 10 "$fuse_export of disk $i" disk_fuse_ready "$i"
}
disk_nbd_ready() {
  alive "${nbd_pid[$1]}" || fail "nbdkit of disk $1 exited: $(tail -5 "$m/disk$1/nbdkit.log")"
  [ -s "$m/disk$1/nbdkit.pid" ]
}
disk_fuse_ready() {
  alive "${fuse_pid[$1]}" || fail "$fuse_export of disk $1 exited: $(tail -5 "$m/disk$1/fuse.log")"
  [ -s "$m/disk$1/fuse.pid" ] && is_mounted "$(disk_mountpoint "$1")"
}
disk_create() {  # I SIZE
  local d=$m/disk$1
  mkdir -p "$d/tmp" "$d/mnt"
  truncate -s "$2" "$d/image"
  : >"$d/dev"  # qemu-storage-daemon's mount point must be a regular file
  disk_start "$1"
  disk_selftest "$1"
}
# disk_selftest I: a 2 MiB O_DIRECT write of distinct 4 KiB blocks into the last 2 MiB of the
# disk (beyond the pool's last extent) must read back as written. Catches a FUSE layer that
# corrupts the large writes of a mirror resync.
disk_selftest() {
  python3 - "$(disk_file "$1")" <<'EOF' || fail "disk $1: the FUSE layer ($fuse_export) returned other data than was written with O_DIRECT; with qemu-storage-daemon 7.2 use RSIO_FUSE_EXPORT=nbdfuse"
import mmap, os, sys
n = 2 << 20
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
off = os.lseek(fd, 0, os.SEEK_END) - n
buf, back = mmap.mmap(-1, n), mmap.mmap(-1, n)
for attempt in range(8):  # the corruption depends on timing: try a few times
    for i in range(0, n, 4096):
        buf[i:i + 4096] = ((0x5E1F7E57 + attempt) * 65536 + i).to_bytes(8, "little") * 512
    os.pwritev(fd, [buf], off)
    os.preadv(fd, [back], off)
    if back[:] != buf[:]:
        sys.exit(1)
EOF
}

# ---- rsiod ----------------------------------------------------------------------------------
rsiod_start() {
  starts=$((starts + 1))
  echo "==== powercut: rsiod start $starts" >>"$m/rsiod.log"
  # --no-lun-scan: the pool devices are files, and this host's block devices (rsclientd's
  # loop devices among them) are none of its business. --poll-us 0: no busy polling next to
  # the load, nbdkit and FUSE on a small machine.
  "$bin/appliance/rsiod" --state-dir "$m/state" --socket "$m/rsiod.sock" \
    --listen "127.0.0.1:$port" --no-lun-scan --poll-us 0 >>"$m/rsiod.log" 2>&1 &
  rsiod_pid=$!
  disown "$rsiod_pid"
  wait_until 20 "rsiod to be ready" rsiod_ready
}
rsiod_ready() {
  alive "$rsiod_pid" || fail "rsiod exited: $(tail -5 "$m/rsiod.log")"
  [ "$(grep -c ' ready: ' "$m/rsiod.log" || true)" -ge "$starts" ]
}
smgr() { "$bin/cli/smgr" "$@"; }
rsadmin() { "$bin/cli/rsadmin" "$@"; }

# appliance_setup NDISKS VOLUME_SIZE [smgr -c options]: disks, rsiod, pool "tank" on the disks,
# volume "vol", node "tux" with a read-write grant.
appliance_setup() {
  local n=$1 size=$2 i
  shift 2
  ndisks=$n
  port=$(free_port)
  export RSIO_SOCKET=$m/rsiod.sock
  for ((i = 0; i < n; i++)); do disk_create "$i" "$vol_image_size"; done
  rsiod_start
  smgr --create-pool tank --default >/dev/null
  for ((i = 0; i < n; i++)); do smgr -a "$(disk_file "$i")" -p tank >/dev/null; done
  smgr -c vol -S "$size" "$@"
  rsadmin -c tux -k "$key" >/dev/null
  rsadmin -g vol tux >/dev/null
  echo "$key" >"$m/key"
}

# Requests the appliance served to tux since this rsiod started (all paths, all sessions).
served_requests() {
  rsadmin -l --json 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)["sessions"]
except Exception:
    print(0); sys.exit()
print(sum(p.get("requests", 0) for x in s if x["client"] == "tux" for p in x["paths"]))'
}
# io_flowing: the load reached this rsiod instance: 20 requests more than io_base (the count
# when the load started; 0 after a restart).
io_flowing() {
  [ -z "$load_pid" ] || alive "$load_pid" ||
    fail "the load exited during the cuts (fio-write.err, pgbench.log; a fio job ends early when it has written the whole volume)"
  [ "$(served_requests)" -ge $((io_base + 20)) ]
}
io_base=0

# power_cut: the appliance loses power. rsiod is stopped first so that it cannot see its
# devices fail (and, say, record a mirror leg as faulty); the disks die with their caches;
# rsiod dies; everything comes back on the same backing images and state directory.
# Sets CUT_BACK_MS (SIGSTOP to rsiod ready).
# Every thread of rsiod has stopped (io_uring's own workers aside: they cannot send a reply).
# kill -STOP returns before the signal took effect; a disk killed while rsiod still runs fails
# its writes, and rsiod rightly answers them IO_ERROR, which is a disk failure, not a power cut.
rsiod_stopped() {
  local t comm state
  for t in /proc/"$rsiod_pid"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    [[ $comm == iou-* ]] && continue
    state=$(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1) || continue
    [ "$state" = T ] || [ "$state" = t ] || return 1
  done
}
power_cut() {
  local i t0
  now_ms
  t0=$NOW_MS
  kill -STOP "$rsiod_pid"
  wait_until 10 "rsiod to stop (SIGSTOP)" rsiod_stopped
  for ((i = 0; i < ndisks; i++)); do kill -KILL "${fuse_pid[$i]}" "${nbd_pid[$i]}" 2>/dev/null || true; done
  kill -KILL "$rsiod_pid"
  reap "$rsiod_pid" 20
  for ((i = 0; i < ndisks; i++)); do
    reap "${fuse_pid[$i]}" 10
    reap "${nbd_pid[$i]}" 10
    unmount_fuse "$(disk_mountpoint "$i")"
  done
  for ((i = 0; i < ndisks; i++)); do disk_start "$i"; done
  rsiod_start
  io_base=0
  now_ms
  CUT_BACK_MS=$((NOW_MS - t0))
  CUT_NOTE=""
  if [ "$mode" = mirror ]; then
    local st
    read -ra st < <(mirror_state)
    CUT_NOTE="; mirror: ${st[1]} region(s) marked, resync active=${st[0]}, legs ${st[2]}"
  fi
}

# cuts_under_load N: N power cuts while the load ($load_pid) runs. Before each, the load must
# have reached the current rsiod (at least 20 requests served), then runs for a random time.
cuts_under_load() {
  local n=$1 i delay_ms t0
  wait_until 60 "the load to reach the appliance" io_flowing
  for ((i = 1; i <= n; i++)); do
    delay_ms=$((delay_lo_ms + RANDOM % (delay_hi_ms - delay_lo_ms + 1)))
    # The random moment of the cut (not a synchronisation: any moment under load will do).
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    alive "$load_pid" || fail "the load exited before cut $i"
    now_ms
    t0=$NOW_MS
    power_cut
    wait_until 30 "the load to resume after cut $i (the client holds I/O for 30 s)" io_flowing
    now_ms
    log "cut $i/$n after ${delay_ms} ms of I/O: appliance back in ${CUT_BACK_MS} ms, I/O resumed after $((NOW_MS - t0)) ms${CUT_NOTE:-}"
  done
  cuts_done=$n
}

# A cut once the load has stopped and flushed: what was acknowledged as durable must be on the
# backing images now (including writes a client replayed after the last cut under load).
final_power_cut() {
  [ "$final_cut" = 1 ] || return 0
  power_cut
  final_done=1
  log "final cut (load stopped, flushed): appliance back in ${CUT_BACK_MS} ms"
}

# ---- rsclientd --------------------------------------------------------------------------------
rsconfig() { "$bin/cli/rsconfig" "$@"; }
client_attach() {
  export RSCLIENT_SOCKET=$m/rsclientd.sock
  "$bin/client/rsclientd" --config "$m/rsclient.json" --dev-dir "$m/dev" --run-dir "$m/run" \
    --state "$m/attached.json" --frontend fuse >>"$m/rsclientd.log" 2>&1 &
  client_pid=$!
  wait_until 10 "rsclientd" client_ready
  rsconfig --set-node tux --key "$key" >/dev/null
  rsconfig --add-server appliance --address "127.0.0.1:$port" >/dev/null
  rsconfig -a vol >/dev/null
  dev=$m/dev/av0/vol
  wait_until 10 "$dev" test -b "$dev"
}
client_ready() {
  alive "$client_pid" || fail "rsclientd exited: $(tail -5 "$m/rsclientd.log")"
  rsconfig --show-config >/dev/null 2>&1
}

# ---- fio ------------------------------------------------------------------------------------
# fio_write_phase JOB CUTS: fio writes (no verify reads) until the cuts are done, then the
# harness stops it (--trigger-file); sets WRITTEN_BLOCKS from its report.
fio_write_phase() {
  local job=$1 n=$2 rc=0
  io_base=$(served_requests)
  # --aux-path: a trigger-file stop saves fio's verify state there, whatever the job says.
  # JSON on stdout: with --output, fio writes its error messages into the same file.
  # --thread: the job is a thread of this one process (one pid to stop in a clean-up).
  fio --thread --do_verify=0 --trigger-file="$m/stop" --aux-path="$m" --output-format=json "$job" \
    >"$m/fio-write.json" 2>"$m/fio-write.err" &
  load_pid=$!
  cuts_under_load "$n"
  # Some more I/O on the last instance, then stop.
  sleep "$(printf '%d.%03d' $((delay_lo_ms / 1000)) $((delay_lo_ms % 1000)))"
  touch "$m/stop"
  wait_until 60 "fio to stop" fio_stopped
  wait "$load_pid" || rc=$?
  load_pid=""
  read -r WRITE_ERR WRITTEN_BLOCKS < <(fio_json "$m/fio-write.json" \
    'j["error"], j["write"]["io_bytes"] // 4096' || echo "-1 0")
  WRITE_RC=$rc
  log "write phase: $WRITTEN_BLOCKS blocks of 4 KiB written and acknowledged (fio exit $rc, error $WRITE_ERR)"
}
fio_stopped() { ! alive "$load_pid"; }
# fio_json FILE EXPR: prints EXPR of the first job (j) of fio's JSON report.
fio_json() {
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(*(eval(sys.argv[2])))' "$1" "$2" 2>/dev/null
}

# fio_verify_phase JOB BLOCKS: reads back the first BLOCKS blocks the write phase wrote (same job,
# same seed: same offsets and contents) and checks each; sets BAD_BLOCKS and VERIFIED_BLOCKS.
fio_verify_phase() {
  local job=$1 blocks=$2 rc=0
  fio --thread --verify_only=1 --io_size=$((blocks * 4096)) --continue_on_error=verify \
    --output-format=json "$job" >"$m/fio-verify.json" 2>"$m/fio-verify.err" || rc=$?
  read -r VERIFY_ERR BAD_BLOCKS VERIFIED_BLOCKS < <(fio_json "$m/fio-verify.json" \
    'j["error"], j.get("total_err", 0), j["read"]["total_ios"]' || echo "-1 0 0")
  VERIFY_RC=$rc
  log "verify: $VERIFIED_BLOCKS of $blocks blocks read back, $BAD_BLOCKS bad (fio exit $rc)"
  if [ "$BAD_BLOCKS" != 0 ] && [ "$mode" != control ]; then
    echo "$mode: first bad blocks (fio):" >&2
    grep -E 'verify: bad|verify failed' "$m/fio-verify.err" | head -12 | sed 's/^/  /' >&2 || true
  fi
}

# The load and verify job through the fio engine. The last 4 MiB of the volume stay out of the
# region: the flush job writes there.
# engine_options: how a fio job reaches the volume through the engine.
engine_options() {
  cat <<EOF
ioengine=external:$engine
server=127.0.0.1:$port
node=tux
keyfile=$m/key
volume=vol
EOF
}
engine_job() {  # FILE
  cat >"$1" <<EOF
[vol]
$(engine_options)
rw=randwrite
bs=4k
iodepth=16
fsync=16
size=$((vol_mib - 4))m
verify=crc32c
verify_state_save=0
randseed=$mseed
EOF
}
# One write and a FLUSH through the engine, outside the verified region: makes everything the
# write phase was told is complete durable before the final cut (fio's end_fsync does not run
# after a trigger-file stop).
engine_flush() {
  cat >"$m/flush.fio" <<EOF
[flush]
$(engine_options)
rw=write
bs=4k
offset=$((vol_mib - 4))m
size=4k
end_fsync=1
EOF
  fio --thread --output="$m/fio-flush.out" "$m/flush.fio" 2>&1 || fail "the flush job failed: $(tail -5 "$m/fio-flush.out")"
  flush_check
}
# flush_check: with nbdkit's request logs, check that nothing is left unflushed on any disk
# before the final cut: each disk's last Write was followed by a completed NBD Flush (the
# client's FLUSH, through rsiod's fdatasync and qemu-storage-daemon).
flush_check() {
  [ "$nbd_log" = 1 ] || return 0
  local i
  for ((i = 0; i < ndisks; i++)); do
    awk '/ Write id=/ { flushed = 0 } /\.\.\.Flush id=.* return=0/ { flushed = 1 }
         END { exit !flushed }' "$m/disk$i/nbd-requests.log" ||
      fail "disk $i has writes that no NBD Flush followed before the final cut (disk$i/nbd-requests.log)"
  done
  log "every disk's last write was followed by an NBD Flush (nbdkit request log)"
}

# ---- Results ----------------------------------------------------------------------------------
# result VERDICT CHECKED BAD [NOTE]: the mode's summary line for the parent.
result() {
  local cuts_txt="$cuts_done"
  [ "${final_done:-0}" = 1 ] && cuts_txt="$cuts_done+1"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$cuts_txt" "$2" "$3" "$1" "${4:-}" >"$m/result"
}

# teardown: every process, mount and loop device of the mode, also after a failure in the
# middle. Processes blocked on held I/O let go once rsclientd (or rsiod) is gone.
teardown() {
  set +e
  trap - ERR
  [ -n "$load_pid" ] && { kill -TERM "$load_pid" 2>/dev/null; reap "$load_pid" 3; }
  if [ -n "$pg_data" ] && [ -f "$pg_data/postmaster.pid" ]; then
    local pm
    pm=$(head -n 1 "$pg_data/postmaster.pid")
    if kill -0 "$pm" 2>/dev/null; then
      # An immediate shutdown removes PostgreSQL's shared memory in /dev/shm; SIGKILL would not.
      as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w -t 10 stop >>"$m/pg/pg_ctl.log" 2>&1 ||
        kill -KILL "$pm" $(pgrep -P "$pm") 2>/dev/null
    fi
  fi
  [ -n "$fs_mnt" ] && is_mounted "$fs_mnt" && { umount "$fs_mnt" 2>/dev/null || umount -l "$fs_mnt"; }
  if [ -n "$client_pid" ]; then
    kill -TERM "$client_pid" 2>/dev/null
    reap "$client_pid" 5
  fi
  if [ -n "$m" ]; then
    # Loop devices rsclientd could not detach (it was killed, say) over its FUSE files.
    losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v p="$m/" 'index($2, p) == 1 {print $1}' |
      while read -r loopdev; do losetup -d "$loopdev"; done
    unmount_fuse "$m/run/fuse"
  fi
  [ -n "$rsiod_pid" ] && stop_proc "$rsiod_pid"
  local i
  for ((i = 0; i < ndisks; i++)); do
    stop_proc "${fuse_pid[$i]:-}"
    stop_proc "${nbd_pid[$i]:-}"
    unmount_fuse "$(disk_mountpoint "$i")"
  done
  [ -n "$load_pid" ] && { reap "$load_pid" 35 || echo "$mode: pid $load_pid did not exit" >&2; }
}
show_tails() {
  local f
  for f in "$m/rsiod.log" "$m/rsclientd.log" "$m/fio-write.err" "$m/fio-verify.err" \
    "$m/pgbench.log" "$m/pg/pg.log" "$m"/disk*/fuse.log "$m"/disk*/nbdkit.log; do
    [ -s "$f" ] || continue
    echo "---- $mode: tail of ${f#"$work"/}" >&2
    tail -n 15 "$f" >&2
  done
}
mode_exit() {
  local rc=$?
  teardown
  if [ "$rc" -eq 130 ]; then
    echo "$mode: interrupted" >&2
  elif [ "$rc" -ne 0 ]; then
    [ -f "$m/result" ] || result FAIL - - "aborted"
    show_tails
  fi
  exit "$rc"
}

# ---- The modes --------------------------------------------------------------------------------
mode_device_osync() { device_mode "sync=1"; }
# Writes are durable only at each fsync (a FLUSH of the device); the client keeps the rest.
mode_device_fsync() { device_mode "fsync=16"; }

# device_mode SYNC_OPTION: fio through rsclientd's device with O_DIRECT and SYNC_OPTION.
device_mode() {
  appliance_setup 1 "${vol_mib}m"
  client_attach
  cat >"$m/load.fio" <<EOF
[vol]
filename=$dev
ioengine=psync
direct=1
$1
rw=randwrite
bs=4k
verify=crc32c
verify_state_save=0
randseed=$mseed
EOF
  fio_write_phase "$m/load.fio" "$cuts"
  # An fsync of the device (a FLUSH): what the write phase was told is complete is durable.
  python3 -c 'import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$dev"
  flush_check
  final_power_cut
  fio_verify_phase "$m/load.fio" "$WRITTEN_BLOCKS"
  fio_verdict
}

mode_engine_fsync() {
  appliance_setup 1 "${vol_mib}m"
  engine_job "$m/load.fio"
  fio_write_phase "$m/load.fio" "$cuts"
  engine_flush
  final_power_cut
  fio_verify_phase "$m/load.fio" "$WRITTEN_BLOCKS"
  fio_verdict
}

# The mirror's I/O state from smgr -qv --json: "RESYNC_ACTIVE MARKED LEGS SCRUB_ACTIVE MISMATCHED
# SCRUB_DONE SCRUB_TOTAL".
mirror_state() {
  smgr -qv --json | python3 -c '
import json, sys
v = [x for x in json.load(sys.stdin)["volumes"] if x["name"] == "vol"][0]
io = v.get("io", {})
if not io.get("open"):
    print("closed 0 - 0 0 0 0"); sys.exit()
r, s = io.get("resync", {}), io.get("scrub", {})
print(int(r.get("active", False)), io.get("marked_regions", 0), ",".join(io["legs"]),
      int(s.get("active", False)), s.get("mismatched_regions", 0), s.get("regions_done", 0),
      s.get("regions_total", 0))'
}
# No resync running and both legs in sync. Regions may stay marked: bits are cleared by the
# next FLUSH that finds no write in flight there (docs/io-engine.md, write-intent bitmap).
mirror_in_sync() {
  local st
  read -ra st < <(mirror_state)
  [ "${st[0]}" = 0 ] && [ "${st[2]}" = "in-sync,in-sync" ]
}
# The initial sync of a new mirror: every region was marked at creation; done when no region
# is marked any more and no resync runs.
mirror_initial_sync_done() {
  local st
  read -ra st < <(mirror_state)
  [ "${st[0]}" = 0 ] && [ "${st[1]}" = 0 ] && [ "${st[2]}" = "in-sync,in-sync" ]
}
scrub_done() {
  local st
  read -ra st < <(mirror_state)
  [ "${st[3]}" = 0 ] && [ "${st[6]}" != 0 ]
}
mode_mirror() {
  appliance_setup 2 "${vol_mib}m" --mirrors 2
  local t0 st
  read -ra st < <(mirror_state)
  now_ms
  t0=$NOW_MS
  wait_until 300 "the initial sync of the mirror" mirror_initial_sync_done
  now_ms
  log "initial sync of the 2-way mirror done (${st[1]} regions marked at creation, $((NOW_MS - t0)) ms)"
  engine_job "$m/load.fio"
  fio_write_phase "$m/load.fio" "$cuts"
  # Let the resync after the last cut finish, so that nothing writes behind the flush.
  wait_until 300 "the mirror's resync (smgr -qv)" mirror_in_sync
  engine_flush
  final_power_cut
  now_ms
  t0=$NOW_MS
  wait_until 300 "the mirror's resync (smgr -qv)" mirror_in_sync
  now_ms
  read -ra st < <(mirror_state)
  log "no resync running, both legs in sync (waited $((NOW_MS - t0)) ms), ${st[1]} region(s) marked"
  fio_verify_phase "$m/load.fio" "$WRITTEN_BLOCKS"
  smgr --scrub vol >/dev/null
  wait_until 300 "the scrub" scrub_done
  read -ra st < <(mirror_state)
  SCRUB_MISMATCHED=${st[4]}
  log "scrub: ${st[5]} of ${st[6]} regions compared, ${st[4]} differ"
  [ "${st[5]}" = "${st[6]}" ] || fail "the scrub stopped after ${st[5]} of ${st[6]} regions (see rsiod.log)"
  fio_verdict "$SCRUB_MISMATCHED"
}

mode_control() {
  appliance_setup 1 "${vol_mib}m"
  # The pool's label went to the disk under cache=writeback; from now on the disk drops
  # every FLUSH on the floor.
  disk_cache=unsafe
  power_cut
  log "disk restarted with cache=unsafe (FLUSH ignored)"
  engine_job "$m/load.fio"
  fio_write_phase "$m/load.fio" "$cuts"
  engine_flush
  final_power_cut
  fio_verify_phase "$m/load.fio" "$WRITTEN_BLOCKS"
  if [ "$BAD_BLOCKS" != 0 ] || [ "$WRITE_RC" != 0 ] || [ "$WRITE_ERR" != 0 ]; then
    log "data loss detected as expected ($BAD_BLOCKS bad blocks, fio write exit $WRITE_RC)"
    result PASS "$VERIFIED_BLOCKS" "$BAD_BLOCKS" "data loss detected as expected"
  else
    result FAIL "$VERIFIED_BLOCKS" 0 "no data loss on a disk that ignores FLUSH: the check has no teeth"
    fail "no data loss detected on a disk that ignores FLUSH: the check has no teeth"
  fi
}

# fio_verdict [SCRUB_MISMATCHED]
fio_verdict() {
  local why=""
  [ "$WRITE_RC" = 0 ] && [ "$WRITE_ERR" = 0 ] || why="fio write phase: exit $WRITE_RC, error $WRITE_ERR; "
  [ "$WRITTEN_BLOCKS" -gt 0 ] || why+="nothing was written; "
  [ "$VERIFIED_BLOCKS" = "$WRITTEN_BLOCKS" ] || why+="only $VERIFIED_BLOCKS of $WRITTEN_BLOCKS blocks read back; "
  [ "$BAD_BLOCKS" = 0 ] || why+="$BAD_BLOCKS acknowledged blocks lost or corrupt; "
  [ "$VERIFY_ERR" = 0 ] || [ "$VERIFY_ERR" = 84 ] || why+="fio verify phase: error $VERIFY_ERR; "
  [ "$VERIFY_RC" = 0 ] || why+="fio verify phase: exit $VERIFY_RC; "
  [ "${1:-0}" = 0 ] || why+="the scrub found $1 regions where the legs differ; "
  if [ -n "$why" ]; then
    result FAIL "$VERIFIED_BLOCKS" "$BAD_BLOCKS" "${why%; }"
    fail "${why%; }"
  fi
  result PASS "$VERIFIED_BLOCKS" 0
  log "PASS"
}

# PostgreSQL as the 'postgres' user.
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME="$m/pg" "$@"; }
psql_q() { "$pg_bin/psql" -X -At -h "$m/pg/sock" -p 5432 -U postgres -d postgres -c "$1"; }
pg_start() {
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$m/pg/pg.log" -w -t 120 start >>"$m/pg/pg_ctl.log" 2>&1 ||
    fail "PostgreSQL did not start: $(tail -5 "$m/pg/pg.log")"
}
pg_crash() {  # kill -9 the postmaster and its children; wait until all are gone
  local pm pids
  pm=$(head -n 1 "$pg_data/postmaster.pid")
  mapfile -t pids < <(echo "$pm"; pgrep -P "$pm")
  kill -KILL "${pids[@]}"
  wait_until 30 "PostgreSQL's processes to die" pg_gone "${pids[@]}"
}
pg_gone() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
mode_pgbench() {
  appliance_setup 1 "${vol_mib}m"
  client_attach
  mkfs.ext4 -q -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dev"
  fs_mnt=$m/mnt
  # $m/pg (the postgres user's): socket directory, server log, HOME.
  mkdir -p "$fs_mnt" "$m/pg/sock"
  chown -R postgres: "$m/pg"
  mount "$dev" "$fs_mnt"
  mkdir "$fs_mnt/pg"
  chown postgres: "$fs_mnt/pg"
  pg_data=$fs_mnt/pg/data
  as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -k >"$m/initdb.log" 2>&1 ||
    fail "initdb failed: $(tail -5 "$m/initdb.log")"
  cat >>"$pg_data/postgresql.conf" <<EOF
# powercut.sh
listen_addresses = ''
unix_socket_directories = '$m/pg/sock'
port = 5432
fsync = on
full_page_writes = on
synchronous_commit = on
wal_sync_method = fdatasync
shared_buffers = 32MB
checkpoint_timeout = 30s
max_wal_size = 64MB
EOF
  pg_start
  "$pg_bin/pgbench" -h "$m/pg/sock" -p 5432 -U postgres -i -s "$pg_scale" -q postgres \
    >"$m/pgbench-init.log" 2>&1 || fail "pgbench -i failed: $(tail -5 "$m/pgbench-init.log")"
  log "PostgreSQL 15 on ext4 on $dev, pgbench scale $pg_scale initialised"
  io_base=$(served_requests)
  "$pg_bin/pgbench" -h "$m/pg/sock" -p 5432 -U postgres -c 4 -j 2 -T 3600 -P 5 postgres \
    >"$m/pgbench.log" 2>&1 &
  load_pid=$!
  cuts_under_load "$cuts"
  sleep "$(printf '%d.%03d' $((delay_lo_ms / 1000)) $((delay_lo_ms % 1000)))"
  alive "$load_pid" || fail "pgbench exited during the cuts: $(tail -5 "$m/pgbench.log")"
  if grep -E 'PANIC|could not (write|fsync|read)|I/O error' "$m/pg/pg.log" >&2; then
    fail "PostgreSQL saw I/O errors during the cuts (pg.log above)"
  fi
  # The database server crashes too: no shutdown checkpoint.
  pg_crash
  kill -TERM "$load_pid" 2>/dev/null || true
  reap "$load_pid" 10
  load_pid=""
  log "pgbench stopped; PostgreSQL killed (kill -9)"
  # Unmount (writes back the page cache and commits the journal: a FLUSH), cut, and drop this
  # host's caches so that everything below is read from the appliance again.
  umount "$fs_mnt"
  final_power_cut
  blockdev --flushbufs "$dev"
  echo 3 >/proc/sys/vm/drop_caches
  local bad=0 notes=() rc=0
  e2fsck -fn "$dev" >"$m/e2fsck-1.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then bad=$((bad + 1)); notes+=("e2fsck after the cuts: exit $rc"); fi
  mount "$dev" "$fs_mnt"
  pg_start
  grep -q 'redo done\|database system was not properly shut down' "$m/pg/pg.log" &&
    log "PostgreSQL crash recovery done"
  rc=0
  "$pg_bin/pg_amcheck" -h "$m/pg/sock" -p 5432 -U postgres --install-missing --heapallindexed \
    postgres >"$m/pg_amcheck.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then bad=$((bad + 1)); notes+=("pg_amcheck: exit $rc"); fi
  local sums
  sums=$(psql_q "select (select sum(abalance) from pgbench_accounts) || ' ' ||
      (select sum(bbalance) from pgbench_branches) || ' ' || (select sum(tbalance) from pgbench_tellers)
      || ' ' || (select coalesce(sum(delta), 0) from pgbench_history) || ' ' ||
      (select count(*) from pgbench_history)" 2>>"$m/pg_amcheck.log") || sums="query failed"
  local a b t h n
  read -r a b t h n <<<"$sums"
  log "after recovery: $n pgbench transactions; sum(abalance)=$a sum(bbalance)=$b sum(tbalance)=$t sum(delta)=$h"
  if [ "$a" != "$b" ] || [ "$b" != "$t" ] || [ "$t" != "$h" ] || [ -z "$h" ]; then
    bad=$((bad + 1)); notes+=("TPC-B invariant broken: $sums")
  fi
  [ "${n:-0}" -gt 0 ] 2>/dev/null || { bad=$((bad + 1)); notes+=("no pgbench transaction survived"); }
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 60 stop >>"$m/pg/pg_ctl.log" 2>&1
  umount "$fs_mnt"
  rc=0
  e2fsck -fn "$dev" >"$m/e2fsck-2.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then bad=$((bad + 1)); notes+=("e2fsck at the end: exit $rc"); fi
  if [ "$bad" != 0 ]; then
    local f
    for f in e2fsck-1.log pg_amcheck.log e2fsck-2.log; do
      echo "---- $mode: $f" >&2; head -n 20 "$m/$f" >&2
    done
    result FAIL "$n" "$bad" "$(IFS=';'; echo "${notes[*]}")"
    fail "$(IFS=';'; echo "${notes[*]}")"
  fi
  log "pg_amcheck clean, balances consistent, e2fsck -fn clean (twice)"
  result PASS "$n" 0 "pg_amcheck, TPC-B invariant, e2fsck"
  log "PASS"
}

# run_mode MODE INDEX: the mode in a subshell, with its own clean-up.
run_mode() {
  mode=$1
  m=$work/$mode
  mkdir -p "$m"
  mseed=$(((seed * 131 + $2 * 7919) % 32768))
  RANDOM=$mseed
  key=k$mseed
  vol_mib=1024
  [ "$mode" = mirror ] && vol_mib=512
  vol_image_size=$((vol_mib + 64))m
  cuts_done=0; final_done=0
  if [ "$mode" = control ]; then
    cuts=${RSIO_CONTROL_CUTS:-2}
  else
    cuts=${RSIO_CUTS_PER_MODE:-${default_cuts[$mode]}}
  fi
  trap mode_exit EXIT
  trap 'exit 130' INT TERM
  trap 'echo "$mode: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR
  set -E
  log "---- $cuts cuts under load, seed $seed (mode seed $mseed)"
  "mode_${mode//-/_}"
}

echo "powercut: seed $seed (RSIO_TEST_SEED=$seed replays the cut schedule), modes: ${modes[*]}"
echo "powercut: work directory $work"
failed=0
t_start=$SECONDS
declare -A elapsed
for i in "${!all_modes[@]}"; do
  mname=${all_modes[$i]}
  uses "$mname" || continue
  t0=$SECONDS
  # In the background, so that a signal to this shell reaches the mode at once (its EXIT trap
  # cleans up); SIGINT is ignored in background subshells, so the trap forwards SIGTERM.
  (run_mode "$mname" "$i") &
  mode_pid=$!
  set +e
  while :; do
    wait "$mode_pid"
    rc=$?
    alive "$mode_pid" || break
  done
  set -e
  mode_pid=""
  elapsed[$mname]=$((SECONDS - t0))
  [ -z "$interrupted" ] || exit 130
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    keep_logs=1
  fi
done

echo
echo "==== powercut summary (seed $seed)"
printf '%-13s %-6s %-9s %-13s %-6s %s\n' mode cuts checked verify-errors result note
total_cuts=0
total_bad=0
for mname in "${all_modes[@]}"; do
  uses "$mname" || continue
  if [ -f "$work/$mname/result" ]; then
    IFS=$'\t' read -r _ c checked bad verdict note <"$work/$mname/result"
  else
    c=0; checked=-; bad=-; verdict=FAIL; note="no result"
  fi
  [ "$mname" = control ] || total_cuts=$((total_cuts + ${c%+*}))
  [ "$mname" = control ] || [ "$bad" = - ] || total_bad=$((total_bad + bad))
  printf '%-13s %-6s %-9s %-13s %-6s %s (%ss)\n' "$mname" "$c" "$checked" "$bad" "$verdict" "$note" \
    "${elapsed[$mname]}"
done
verdict=PASS
[ "$failed" -eq 0 ] || verdict=FAIL
echo "total: ${#modes[@]} mode(s), $total_cuts cuts under load outside the control, $total_bad verify errors, $failed failed, $((SECONDS - t_start)) s: $verdict"
[ "$failed" -eq 0 ]
