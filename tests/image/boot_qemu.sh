#!/usr/bin/env bash
# The appliance image booted in qemu (TCG), used as an admin would, twice:
#
#  1. First boot by direct kernel boot with rsio.disks= naming two empty 1 GiB virtio disks:
#     rsio-setup makes pool0 of them before rsiod starts; the root partition grows into the
#     512 MiB added to the disk. On the serial console (root autologin): no failed unit, the
#     setup's result, rsio-setup run again by hand changes nothing, a 2-way mirrored volume,
#     a client node with its key, a grant. On this host: rsclientd (FUSE + loop frontend)
#     reaches the appliance through qemu's port forward, attaches the volume, 64 MiB of
#     random data are written and read back; the mirror's initial sync finishes; power off.
#  2. The same disks booted again through UEFI firmware (OVMF) and systemd-boot, or by direct
#     kernel boot where OVMF is missing: the setup does not run again, volume, node and grant
#     are there, the host attaches the volume again and reads the same data.
#
# Prints the image build time (when it built the image), the time from qemu's start to rsiod
# being active for each boot, and the total.
#
# Usage: boot_qemu.sh BUILD_DIR   (rsclientd and rsconfig are taken from BUILD_DIR)
# Environment:
#   IMAGE=PATH     the image to boot (vmlinuz, initrd.img and cmdline next to it are used for
#                  the direct kernel boot); default build/image/rsio-appliance.img, built with
#                  image/build.sh when missing or older than build/packages
#   RSIO_IMAGE_BUILD_PACKAGES=1 (or CI=true): build the packages (scripts/build-packages.sh)
#                  when build/packages has none
#   RSIO_IMAGE_KEEP=1  keep the work directory (console log, disks)
# Needs root, /dev/fuse, loop devices and qemu-system-x86 (installed when missing); exits 77
# (CTest: skipped) with the reason otherwise.
set -euo pipefail
bin=${1:?usage: $0 BUILD_DIR}
bin=$(cd "$bin" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
console="python3 $src/tests/image/console.py"
skip() { echo "SKIP: image boot: $*"; exit 77; }
t_start=$(date +%s)

[ "$(id -u)" -eq 0 ] || skip "needs root (image build, FUSE mount, loop devices on the host)"
[ -c /dev/fuse ] || skip "no /dev/fuse (the host attaches the appliance's volume through FUSE)"
[ -c /dev/loop-control ] || skip "no loop devices (/dev/loop-control)"
[ -x "$bin/client/rsclientd" ] && [ -x "$bin/cli/rsconfig" ] || skip "rsclientd/rsconfig not built in $bin"
command -v python3 >/dev/null || skip "python3 is missing (it drives the serial console)"
if ! command -v qemu-system-x86_64 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 \
    >/dev/null 2>&1 || skip "qemu-system-x86 is not installed and cannot be installed"
fi
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
if [ ! -e "$ovmf_code" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ovmf >/dev/null 2>&1 || true
fi

# --- the image -------------------------------------------------------------------------------
build_s=""
if [ -n "${IMAGE:-}" ]; then
  [ -f "$IMAGE" ] || { echo "image boot: FAILED: IMAGE=$IMAGE does not exist" >&2; exit 1; }
  image=$(realpath "$IMAGE")
else
  image=$src/build/image/rsio-appliance.img
  packages=()
  for f in "$src"/build/packages/*.deb; do
    [ -e "$f" ] && case $f in *-dbgsym_*) ;; *) packages+=("$f") ;; esac
  done
  if [ ${#packages[@]} -eq 0 ]; then
    if [ "${RSIO_IMAGE_BUILD_PACKAGES:-}" = 1 ] || { [ -n "${CI:-}" ] && [ "${CI:-}" != false ]; }; then
      echo "image boot: no packages in build/packages; building them (scripts/build-packages.sh)"
      mkdir -p "$src/build"
      "$src/scripts/build-packages.sh" >"$src/build/packages-build.log" 2>&1 ||
        { tail -30 "$src/build/packages-build.log" >&2; echo "image boot: FAILED: scripts/build-packages.sh (log: build/packages-build.log)" >&2; exit 1; }
    else
      skip "no image and no packages to build it from: run scripts/build-packages.sh (or set RSIO_IMAGE_BUILD_PACKAGES=1), or give IMAGE="
    fi
  fi
  stale=""
  if [ -f "$image" ]; then
    for f in "$src"/build/packages/*.deb; do [ "$f" -nt "$image" ] && stale="packages newer than the image"; done
    for f in "$src"/image/build.sh "$src"/image/customize.sh $(find "$src/image/rootfs" -type f); do
      [ "$f" -nt "$image" ] && stale="image sources newer than the image"
    done
  fi
  if [ ! -f "$image" ] || [ -n "$stale" ]; then
    echo "image boot: building the image (${stale:-none built yet}): image/build.sh"
    mkdir -p "$src/build"
    t0=$(date +%s)
    "$src/image/build.sh" >"$src/build/image-build.log" 2>&1 ||
      { tail -30 "$src/build/image-build.log" >&2; echo "image boot: FAILED: image/build.sh (log: build/image-build.log)" >&2; exit 1; }
    build_s=$(($(date +%s) - t0))
    grep '^build.sh: ' "$src/build/image-build.log" | tail -8
  fi
fi
image_dir=$(dirname "$image")
for f in vmlinuz initrd.img cmdline; do
  [ -f "$image_dir/$f" ] || { echo "image boot: FAILED: $image_dir/$f is missing (image/build.sh writes it)" >&2; exit 1; }
done
echo "image: $image ($(($(stat -c %s "$image") / 1048576)) MiB, $(($(du -B1 "$image" | cut -f1) / 1048576)) MiB allocated)"

# --- work directory, disks, port ------------------------------------------------------------
tmp_parent=/tmp
if [ "$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')" -gt 6144 ] 2>/dev/null; then tmp_parent=/dev/shm; fi
work=$(mktemp -d "$tmp_parent/rsio-image-boot-XXXXXX")
qemu_pid="" client_pid=""
cleanup() {
  set +e
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null && wait "$client_pid" 2>/dev/null
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  if [ -n "${RSIO_IMAGE_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
  echo "image boot: FAILED: $*" >&2
  echo "---- serial console (last 60 lines)" >&2
  tr -d '\r' <"$work/console.log" 2>/dev/null | tail -60 >&2
  echo "---- rsclientd log (last 20 lines)" >&2
  tail -20 "$work/rsclientd.log" 2>/dev/null >&2
  echo "---- qemu" >&2
  cat "$work/qemu.log" 2>/dev/null >&2
  exit 1
}

cp --sparse=always "$image" "$work/system.img"
# A larger disk than the image: the root partition must grow into the rest at the first boot.
truncate -s +512M "$work/system.img"
truncate -s 1G "$work/data1.img" "$work/data2.img"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
disk1=/dev/disk/by-id/virtio-rsio-data1 disk2=/dev/disk/by-id/virtio-rsio-data2

# boot_vm MODE [KERNEL ARGUMENTS]: MODE direct (kernel and initrd given to qemu) or uefi.
boot_vm() {
  local mode=$1 extra=${2:-}
  local args=(-accel tcg -cpu max -m 1024 -smp 2 -nodefaults -display none -no-reboot
    -drive "file=$work/system.img,format=raw,if=none,id=sys" -device virtio-blk-pci,drive=sys
    -drive "file=$work/data1.img,format=raw,if=none,id=d1" -device virtio-blk-pci,drive=d1,serial=rsio-data1
    -drive "file=$work/data2.img,format=raw,if=none,id=d2" -device virtio-blk-pci,drive=d2,serial=rsio-data2
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:5000" -device virtio-net-pci,netdev=n0
    -chardev "socket,id=ser0,path=$work/console.sock,server=on,wait=off,logfile=$work/console.log,logappend=on"
    -serial chardev:ser0)
  if [ "$mode" = direct ]; then
    args+=(-kernel "$image_dir/vmlinuz" -initrd "$image_dir/initrd.img" -append "$(cat "$image_dir/cmdline") $extra")
  else
    cp "$ovmf_vars" "$work/OVMF_VARS.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code"
      -drive "if=pflash,format=raw,unit=1,file=$work/OVMF_VARS.fd")
  fi
  rm -f "$work/console.sock"
  qemu-system-x86_64 "${args[@]}" >>"$work/qemu.log" 2>&1 &
  qemu_pid=$!
}

# on_console TIMEOUT_S COMMAND: runs COMMAND on the appliance's console, shows it as typed.
on_console() {
  echo "appliance# $2"
  $console "$work/console.sock" run "$1" "$2"
}
# console_out TIMEOUT_S COMMAND: the same, quietly; prints only the output.
console_out() { $console "$work/console.sock" run "$1" "$2"; }

# wait_ready BOOT: waits for the console's shell, then for rsiod to be active and the boot to
# be complete without failed units; prints the time since qemu started.
wait_ready() {
  local t0=$1 label=$2
  $console "$work/console.sock" wait-shell 900 || fail "$label: no shell on the serial console within 900 s"
  console_out 600 "systemctl is-active -q rsiod.service || timeout 500 systemctl start rsiod.service" ||
    fail "$label: rsiod did not become active: $(console_out 60 'journalctl -b -u rsiod -u rsio-setup --no-pager | tail -30')"
  ready_s=$(($(date +%s) - t0))
  local state
  state=$(console_out 600 "timeout 500 systemctl is-system-running --wait") || true
  local failed
  failed=$(console_out 60 "systemctl --failed --no-legend --plain")
  [ -z "$failed" ] || fail "$label: failed units ($state): $failed"
  echo "$label: rsiod active $ready_s s after qemu started; system $state"
  console_out 60 "systemd-analyze | head -n 1; echo \"rsiod active at \$(( \$(systemctl show -p ActiveEnterTimestampMonotonic --value rsiod) / 1000000 )) s after the kernel started\"" |
    sed "s/^/$label: guest: /"
}

poweroff_vm() {
  local label=$1
  on_console 60 "systemctl poweroff" || true
  local deadline=$((SECONDS + 180))
  while kill -0 "$qemu_pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "$label: qemu still runs 180 s after systemctl poweroff"
    sleep 0.5
  done
  wait "$qemu_pid" || fail "$label: qemu exited with an error"
  qemu_pid=""
}

# --- the host side: rsclientd with a private configuration --------------------------------
export RSCLIENT_SOCKET=$work/rsclientd.sock
rsconfig=$bin/cli/rsconfig
dev=$work/dev/av0/vol0
start_client() {
  "$bin/client/rsclientd" --config "$work/rsclient.json" --dev-dir "$work/dev" \
    --run-dir "$work/run" --state "$work/attached.json" >>"$work/rsclientd.log" 2>&1 &
  client_pid=$!
  local deadline=$((SECONDS + 20))
  until "$rsconfig" --show-config >/dev/null 2>&1; do
    kill -0 "$client_pid" 2>/dev/null || fail "rsclientd exited"
    [ $SECONDS -lt $deadline ] || fail "rsclientd did not answer within 20 s"
    sleep 0.1
  done
}
stop_client() {
  kill "$client_pid"
  wait "$client_pid" || true
  client_pid=""
}
host() {
  echo "host# $*"
  "$@"
}

node=imagetest
key=$(head -c 12 /dev/urandom | base64 | tr -d '+/=' | cut -c1-16)

# === boot 1 =====================================================================================
echo "== boot 1: direct kernel boot, rsio.disks=$disk1,$disk2"
t1=$(date +%s)
boot_vm direct "rsio.disks=$disk1,$disk2"
wait_ready "$t1" "boot 1"
ready1=$ready_s

on_console 60 "journalctl -b -u rsio-setup -o cat --no-pager | grep '^rsio-setup'" || fail "no rsio-setup output in the journal"
out=$(on_console 60 "smgr -P; smgr -D") || fail "smgr -P/-D failed"
echo "$out"
grep -Eq '^pool0 .* 2 +0 +\*' <<<"$out" || fail "rsio-setup did not make pool0 of the two disks the default pool"
grep -q "$disk1" <<<"$out" && grep -q "$disk2" <<<"$out" || fail "the data disks are not devices of pool0"
on_console 60 "cat /var/lib/rsio/setup.done" || fail "rsio-setup wrote no marker"
out=$(on_console 120 "rsio-setup --disks $disk1,$disk2") || fail "rsio-setup run again by hand failed: $out"
echo "$out"
grep -q "exists" <<<"$out" && [ "$(grep -c 'already' <<<"$out")" -eq 2 ] || fail "rsio-setup run again did not find pool and disks in place"

# The root partition and file system fill the larger disk; the ESP is mounted for updates.
out=$(console_out 60 'root=$(findmnt -no SOURCE /); disk=/dev/$(lsblk -no PKNAME "$root"); echo "disk=$(blockdev --getsize64 "$disk") esp=$(blockdev --getsize64 /dev/disk/by-label/RSIO-ESP) part=$(blockdev --getsize64 "$root") fs=$(findmnt -bno SIZE /) esp_mounted=$(findmnt -no TARGET /boot/efi)"') ||
  fail "cannot read the disk sizes"
echo "boot 1: system disk: $out"
field() { tr ' ' '\n' <<<"$out" | sed -n "s/^$1=//p"; }
disk=$(field disk) esp=$(field esp) part=$(field part) fs=$(field fs) esp_mounted=$(field esp_mounted)
[[ "$disk$esp$part$fs" =~ ^[0-9]+$ ]] || fail "cannot read the disk sizes: $out"
[ $((disk - esp - part)) -lt $((16 << 20)) ] || fail "the root partition did not grow to the end of the disk"
[ $((fs * 10)) -gt $((part * 9)) ] || fail "the root file system did not grow with its partition"
[ "$esp_mounted" = /boot/efi ] || fail "the ESP is not mounted at /boot/efi"

on_console 60 "smgr -c vol0 -S 256m --mirrors 2" || fail "smgr -c vol0 --mirrors 2 failed"
on_console 60 "rsadmin -c $node -k $key" || fail "rsadmin -c failed"
on_console 60 "rsadmin -g vol0 $node" || fail "rsadmin -g failed"
on_console 60 "rsadmin -qa"

start_client
host "$rsconfig" --set-node "$node" --key "$key"
host "$rsconfig" --add-server appliance --address "127.0.0.1:$port"
host "$rsconfig" -q
host "$rsconfig" -a vol0 || fail "attaching vol0 failed"
[ -b "$dev" ] || fail "$dev is not a block device"
on_console 60 "rsadmin -qA"
head -c 64M /dev/urandom >"$work/data.bin"
sum=$(sha256sum <"$work/data.bin" | cut -d' ' -f1)
t0=$(date +%s.%N)
dd if="$work/data.bin" of="$dev" bs=1M oflag=direct conv=fsync status=none || fail "writing to $dev failed"
t_write=$(python3 -c "import time; print('%.1f' % (time.time() - $t0))")
read_sum() { dd if="$dev" bs=1M count=64 iflag=direct status=none | sha256sum | cut -d' ' -f1; }
[ "$(read_sum)" = "$sum" ] || fail "the data read back differ from the data written"
echo "boot 1: 64 MiB written in $t_write s and read back over RSIO: sha256 $sum"
host "$rsconfig" -d vol0 || fail "detaching vol0 failed"
stop_client

# The mirror's initial sync, then both legs hold the data.
deadline=$((SECONDS + 600))
while :; do
  out=$(console_out 60 "smgr -qv") || fail "smgr -qv failed"
  if grep -q '^0001 vol0 .*mirrored 2-way .* ok ' <<<"$out" && ! grep -q 'resync:' <<<"$out"; then break; fi
  [ $SECONDS -lt $deadline ] || fail "the mirror's initial sync did not finish within 600 s"
  sleep 2
done
on_console 60 "smgr -qv"
poweroff_vm "boot 1"

# === boot 2 =====================================================================================
if [ -e "$ovmf_code" ] && [ -e "$ovmf_vars" ]; then
  mode=uefi
  echo "== boot 2: UEFI (OVMF) and systemd-boot from the same disks"
else
  mode=direct
  echo "== boot 2: direct kernel boot from the same disks (OVMF is not installed: the UEFI path is not booted)"
fi
t2=$(date +%s)
boot_vm "$mode"
wait_ready "$t2" "boot 2"
ready2=$ready_s
if [ "$mode" = uefi ]; then
  # systemd-boot leaves its name and the entry it started in EFI variables.
  out=$(on_console 60 'test -d /sys/firmware/efi && for v in LoaderInfo LoaderEntrySelected; do printf "%s=" $v; cat /sys/firmware/efi/efivars/$v-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tail -c +5 | tr -d "\\0"; echo; done') ||
    fail "boot 2 was not a UEFI boot"
  echo "$out"
  grep -q '^LoaderInfo=systemd-boot' <<<"$out" && grep -q '^LoaderEntrySelected=rsio.conf$' <<<"$out" ||
    fail "boot 2 did not come through systemd-boot's rsio.conf entry"
fi
out=$(console_out 60 "systemctl show -p ConditionResult --value rsio-setup.service") || true
[ "$out" = no ] || fail "rsio-setup ran again at boot 2 (ConditionResult=$out)"
out=$(on_console 60 "smgr -q; rsadmin -q; rsadmin -qa") || fail "listing on boot 2 failed"
echo "$out"
grep -Eq '^0001 vol0 .*mirrored 2-way +pool0 +ok +'"$node" <<<"$out" || fail "vol0 is not there as before"
grep -Eq "^0 vol0 +: $node\$" <<<"$out" || fail "the grant of vol0 to $node is gone"

start_client
host "$rsconfig" -a vol0 || fail "attaching vol0 after the reboot failed"
[ "$(read_sum)" = "$sum" ] || fail "after the reboot the volume holds other data"
echo "boot 2: read back over RSIO after the reboot: sha256 $sum (the same)"
host "$rsconfig" -d vol0 || fail "detaching vol0 failed"
stop_client

# Removing the server package stops its service and keeps the appliance's data.
on_console 300 "dpkg -r rsio-server" || fail "dpkg -r rsio-server failed"
out=$(console_out 60 'systemctl is-active rsiod.service; ls /var/lib/rsio/rsio.db; test -e /usr/sbin/rsiod && echo rsiod-still-installed') || true
echo "$out"
grep -qx 'inactive' <<<"$out" || fail "rsiod still runs after dpkg -r rsio-server: $out"
grep -qx '/var/lib/rsio/rsio.db' <<<"$out" || fail "removing rsio-server removed the database: $out"
! grep -q 'rsiod-still-installed' <<<"$out" || fail "dpkg -r rsio-server left /usr/sbin/rsiod"
echo "boot 2: dpkg -r rsio-server stopped rsiod and kept /var/lib/rsio/rsio.db"
poweroff_vm "boot 2"

t_end=$(date +%s)
echo "== timings"
if [ -n "$build_s" ]; then
  echo "image build: $build_s s"
else
  echo "image build: not needed (up to date; $(head -n 1 "$image_dir/manifest.txt" 2>/dev/null || echo "no manifest"))"
fi
echo "boot 1 (direct kernel, first boot with setup): rsiod active $ready1 s after qemu started"
echo "boot 2 ($mode): rsiod active $ready2 s after qemu started"
echo "total: $((t_end - t_start)) s"
echo "image boot: PASS"
