#!/usr/bin/env bash
# The ublk frontend in a qemu guest (TCG) running Debian's 6.12 kernel: the guest boots a
# busybox initramfs holding rsclientd, rsconfig, mke2fs and the ublk_drv, virtio_net and ext4
# modules; it reaches rsiod on this host through user-mode networking (10.0.2.2), attaches a
# volume as a ublk device, makes ext4 on it, writes and verifies files, detaches.
#
# Usage: ublk_qemu.sh BUILD_DIR. Needs root (to install qemu and fetch the kernel package when
# missing) and the Debian archive; exits 77 (CTest: skipped) with the reason when it cannot.
set -euo pipefail
bin=${1:?usage: $0 BUILD_DIR}
skip() { echo "SKIP: ublk qemu guest: $*"; exit 77; }
cache=${RSIO_QEMU_CACHE:-/var/cache/rsio-qemu}

[ -x "$bin/client/rsclientd" ] || skip "rsclientd was not built"
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null || ! [ -x /bin/busybox ] ||
  ! busybox --list >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || skip "qemu-system-x86 and busybox-static are not installed (needs root)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    qemu-system-x86 busybox-static cpio >/dev/null 2>&1 || skip "cannot install qemu-system-x86, busybox-static, cpio"
fi
mkdir -p "$cache"
deb=$(ls "$cache"/linux-image-6.12*-amd64_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  pkg=$(apt-cache depends linux-image-6.12-amd64 2>/dev/null | awk '/Depends: linux-image/{print $2; exit}')
  [ -n "$pkg" ] || skip "linux-image-6.12-amd64 is not in the configured archive (bookworm-security)"
  (cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) || skip "cannot download $pkg"
  deb=$(ls "$cache"/linux-image-6.12*-amd64_*.deb | head -n 1)
fi
if [ ! -d "$cache/kernel/boot" ]; then
  rm -rf "$cache/kernel"
  dpkg-deb -x "$deb" "$cache/kernel"
fi
kver=$(ls "$cache/kernel/lib/modules" | head -n 1)
vmlinuz=$cache/kernel/boot/vmlinuz-$kver

work=$(mktemp -d /dev/shm/rsio-qemu-XXXXXX)
rsiod_pid=""
cleanup() {
  set +e
  [ -n "$rsiod_pid" ] && kill "$rsiod_pid" 2>/dev/null && wait "$rsiod_pid" 2>/dev/null
  if [ -n "${RSIO_QEMU_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- the appliance on this host -------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export RSIO_SOCKET=$work/rsiod.sock
"$bin/appliance/rsiod" --state-dir "$work/state" --init-pool-size 2g \
  --listen "127.0.0.1:$port" >"$work/rsiod.log" 2>&1 &
rsiod_pid=$!
for _ in $(seq 200); do "$bin/cli/smgr" -P >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/cli/smgr" -c eisberg -S 512m
"$bin/cli/rsadmin" -c tux -k Linuxtag >/dev/null
"$bin/cli/rsadmin" -g eisberg tux >/dev/null
"$bin/cli/smgr" -c big4k -S 64m --block-size 4096
"$bin/cli/rsadmin" -g big4k tux >/dev/null

# --- the initramfs ------------------------------------------------------------------------------
root=$work/initrd
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,lib/modules,run}
cp /bin/busybox "$root/bin/busybox"
for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
copy_with_libs() {
  local f=$1
  # Replace a busybox applet link of the same name; cp would write through it into busybox.
  rm -f "$root/bin/$(basename "$f")"
  cp -L "$f" "$root/bin/"
  for lib in $(ldd "$f" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'); do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -Ln "$lib" "$root$lib"
  done
}
for f in /bin/bash /sbin/mke2fs /sbin/e2fsck "$(command -v fio)" "$bin/client/rsclientd" \
  "$bin/cli/rsconfig"; do
  copy_with_libs "$f"
done
ln -sf mke2fs "$root/bin/mkfs.ext4"
# Kernel modules with their dependencies, in load order, decompressed for busybox insmod.
python3 - "$cache/kernel/lib/modules/$kver" "$root/lib/modules" >"$root/etc/modules" <<'EOF'
import lzma, os, re, sys
src, dst = sys.argv[1], sys.argv[2]
paths = {}
for d, _, fs in os.walk(src):
    for f in fs:
        if f.endswith(".ko.xz"):
            paths[f[:-6].replace("-", "_")] = os.path.join(d, f)
order = []
def visit(m):
    if m in order:
        return
    data = lzma.open(paths[m]).read()
    dep = re.search(rb"depends=([^\0]*)\0", data)
    for d in (dep.group(1).decode().split(",") if dep else []):
        if d:
            visit(d.replace("-", "_"))
    with open(os.path.join(dst, m + ".ko"), "wb") as f:
        f.write(data)
    order.append(m)
for m in ["ublk_drv", "virtio_net", "ext4", "crc32c_generic"]:
    visit(m)
print("\n".join(order))
EOF
cat >"$root/init" <<EOF
#!/bin/bash
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /run
for m in \$(cat /etc/modules); do insmod /lib/modules/\$m.ko || echo "GUEST: insmod \$m failed"; done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
bash /test.sh 2>&1
echo "GUEST-EXIT: \$?"
poweroff -f
EOF
cat >"$root/test.sh" <<EOF
set -e
trap 'echo "GUEST: failed at line \$LINENO; rsclientd log:"; cat /tmp/rsclientd.log' ERR
echo "GUEST: kernel \$(uname -r), /dev/ublk-control: \$(ls /dev/ublk-control)"
mkdir -p /etc/rsio /var/lib/rsio
rsclientd --frontend ublk --run-dir /run/rsio/client >/tmp/rsclientd.log 2>&1 &
for i in \$(seq 300); do rsconfig --show-config >/dev/null 2>&1 && break; sleep 0.1; done
rsconfig --set-node tux --key Linuxtag
rsconfig --add-server trainator --address 10.0.2.2:$port
rsconfig -q
rsconfig -a eisberg
ls -l /dev/av0/eisberg
rsconfig -lvvv
# fio writes with crc32c verification while rsclientd is killed and started again: the ublk
# device must survive (user recovery) and fio must see no error.
fio --name=verify --filename=/dev/av0/eisberg --rw=randwrite --bs=4k --size=24m \\
  --ioengine=io_uring --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 \\
  --do_verify=1 --randrepeat=0 > /tmp/fio.log 2>&1 &
fio_pid=\$!
# Kill once fio has written something.
for i in \$(seq 600); do
  w=\$(awk '{print \$5}' /sys/block/ublkb0/stat)
  [ "\$w" -gt 2000 ] && break
  sleep 0.05
done
old=\$(pidof rsclientd)
kill -9 \$old
echo "GUEST: killed rsclientd \$old after \$w writes"
rsclientd --frontend ublk --run-dir /run/rsio/client >>/tmp/rsclientd.log 2>&1 &
for i in \$(seq 300); do rsconfig -l 2>/dev/null | grep -q eisberg && break; sleep 0.1; done
echo "GUEST: rsclientd restarted as \$(pidof rsclientd)"
wait \$fio_pid || { cat /tmp/fio.log; echo "GUEST: fio failed"; exit 1; }
grep -E "err=|READ:|WRITE:" /tmp/fio.log
grep -q "err= 0" /tmp/fio.log
grep -q "READ:" /tmp/fio.log  # the verify pass read everything back
grep "taking over" /tmp/rsclientd.log
rsconfig -lvvv
mkfs.ext4 -q /dev/av0/eisberg
mount /dev/av0/eisberg /mnt
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/f\$i bs=1M count=8 2>/dev/null; done
(cd /mnt && sha256sum f* > /tmp/sums)
umount /mnt
echo 3 > /proc/sys/vm/drop_caches
mount /dev/av0/eisberg /mnt
(cd /mnt && sha256sum -c /tmp/sums)
df -h /mnt
if rsconfig -d eisberg; then echo "GUEST: detach while mounted was not refused"; exit 1; fi
umount /mnt
e2fsck -fn /dev/av0/eisberg
rsconfig -d eisberg
[ ! -e /dev/av0/eisberg ]
# A volume with 4 KiB blocks is a ublk device with 4 KiB logical blocks.
rsconfig -a big4k
ss=\$(blockdev --getss /dev/av0/big4k)
[ "\$ss" = 4096 ] || { echo "GUEST: big4k has logical block size \$ss, not 4096"; exit 1; }
fio --name=b4k --filename=/dev/av0/big4k --rw=randwrite --bs=4k --size=4m --direct=1 \\
  --ioengine=io_uring --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 > /tmp/fio4k.log 2>&1 ||
  { cat /tmp/fio4k.log; echo "GUEST: fio on big4k failed"; exit 1; }
rsconfig -d big4k
echo "GUEST: big4k: logical block size \$ss, fio verified"
echo "GUEST: PASS"
EOF
chmod +x "$root/init" "$root/test.sh"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"
echo "initramfs: $(du -h "$work/initrd.gz" | cut -f1), kernel $kver"

# --- boot ------------------------------------------------------------------------------------------
t0=$(date +%s)
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 >"$work/console.log" 2>&1 || true
t1=$(date +%s)
sed -n '/GUEST: kernel/,$p' "$work/console.log" | tr -d '\r'
echo "guest ran $((t1 - t0)) s (TCG)"
if ! grep -q "GUEST: PASS" "$work/console.log"; then
  echo "ublk qemu guest: FAILED (console above; rsiod log below)" >&2
  tail -20 "$work/rsiod.log" >&2
  exit 1
fi
echo "ublk qemu guest: PASS"
