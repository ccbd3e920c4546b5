#!/bin/bash
# Builds the bootable RSIO appliance image: a GPT disk image (UEFI, systemd-boot) of Debian 12
# with the 6.12 kernel, systemd-networkd (DHCP on every NIC), a root console on the serial port,
# the first-boot setup (rsio-setup) and the RSIO packages.
#
#   image/build.sh [OPTIONS] [PACKAGE.deb ...]
#
# Without packages it takes build/packages/*.deb (scripts/build-packages.sh), without the
# -dbgsym ones. Writes to build/image/ (or --output DIR):
#   rsio-appliance.img   the disk image: dd it to a disk, or boot it in qemu
#   vmlinuz, initrd.img  its kernel and initramfs, for direct kernel boot (tests)
#   cmdline              the kernel command line of its boot entry
#   manifest.txt         versions of the packages inside, sizes
#
# Pipeline, without loop devices or mounts: mmdebstrap installs the tree into a directory,
# mkfs.ext4 -d turns it into the root file system, mkfs.vfat -C and mtools make the EFI system
# partition (systemd-boot, kernel, initramfs, boot entry), and systemd-repart puts both into
# a GPT disk image. Needs root (mmdebstrap, and ownership in the file system) and the Debian
# archive; installs its tools when missing. See image/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

usage() {
  cat <<EOF
Usage: $0 [OPTIONS] [PACKAGE.deb ...]

Options:
  -o, --output DIR          output directory (default: $top/build/image)
  --include PKG[,PKG...]    more Debian packages in the image (e.g. openssh-server)
  --components LIST         archive components, comma-separated (default: main; e.g.
                            main,non-free-firmware for firmware-qlogic)
  --mirror URL              Debian mirror (default: \$RSIO_IMAGE_MIRROR or
                            http://deb.debian.org/debian)
  --security-mirror URL     security mirror (default: \$RSIO_IMAGE_SECURITY_MIRROR or
                            http://deb.debian.org/debian-security)
  --root-password-file FILE set root's password from the first line of FILE (default: no
                            password; root logs in automatically on the serial console only)
  --hostname NAME           the appliance's host name (default: rsio)
  --keep-work               keep the work directory (the installed tree, the partitions)
  --no-cache                do not keep downloaded packages in \$RSIO_IMAGE_CACHE
                            (default /var/cache/rsio-image)
  -h, --help                this help
EOF
}

out=$top/build/image
extra="" components=main hostname=rsio password_file="" use_cache=yes keep_work=""
mirror=${RSIO_IMAGE_MIRROR:-http://deb.debian.org/debian}
security=${RSIO_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${RSIO_IMAGE_CACHE:-/var/cache/rsio-image}
debs=()
while [ $# -gt 0 ]; do
  case $1 in
    -o | --output) out=${2:?$1 needs a directory}; shift 2 ;;
    --include) extra=${2:?--include needs packages}; shift 2 ;;
    --components) components=${2:?--components needs a list}; shift 2 ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
    --security-mirror) security=${2:?--security-mirror needs a URL}; shift 2 ;;
    --root-password-file) password_file=$(realpath "${2:?--root-password-file needs a file}"); shift 2 ;;
    --hostname) hostname=${2:?--hostname needs a name}; shift 2 ;;
    --no-cache) use_cache=""; shift ;;
    --keep-work) keep_work=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) debs+=("$(realpath "$1")"); shift ;;
  esac
done

fail() {
  echo "build.sh: $*" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || fail "must run as root: mmdebstrap installs packages into a tree that belongs to root (sudo $0)"

# --- host tools -------------------------------------------------------------------------------
declare -A tool_package=([mmdebstrap]=mmdebstrap [mkfs.ext4]=e2fsprogs [mkfs.vfat]=dosfstools
  [mcopy]=mtools [systemd-repart]=systemd [fallocate]=util-linux)
missing=()
for t in "${!tool_package[@]}"; do
  command -v "$t" >/dev/null || missing+=("${tool_package[$t]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh: installing the image tools: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    fail "cannot install ${missing[*]} (run apt-get update, or install them by hand)"
fi

# --- our packages -----------------------------------------------------------------------------
if [ ${#debs[@]} -eq 0 ]; then
  for f in "$top"/build/packages/*.deb; do
    [ -e "$f" ] || continue
    case $f in *-dbgsym_*) continue ;; esac
    debs+=("$f")
  done
  [ ${#debs[@]} -gt 0 ] ||
    fail "no packages in $top/build/packages: build them with scripts/build-packages.sh, or name .deb files"
fi
for f in "${debs[@]}"; do
  dpkg-deb -f "$f" Package >/dev/null 2>&1 || fail "$f is not a Debian package"
  echo "build.sh: package $(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version) ($f)"
done

start_s=$(date +%s)
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Work in memory when there is room: the tree is written and read once more by mkfs.
work_parent=$out
if [ -d /dev/shm ] && [ "$(df -Pm /dev/shm | awk 'NR == 2 { print $4 }')" -gt 4096 ]; then
  work_parent=/dev/shm
fi
work=$(mktemp -d "$work_parent/rsio-image-XXXXXX")
stage=""
cleanup() {
  rm -rf ${stage:+"$stage"}
  if [ -n "$keep_work" ]; then echo "build.sh: kept the work directory $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
rootdir=$work/root

# --- the root tree ----------------------------------------------------------------------------
packages=(
  systemd-sysv udev kmod dbus systemd-resolved
  linux-image-6.12-amd64 initramfs-tools zstd systemd-boot-efi
  e2fsprogs iproute2 iputils-ping procps less nano
)
include=$(IFS=,; echo "${packages[*]}")
[ -z "$extra" ] || include=$include,$extra
# apt hands the paths of local packages to dpkg inside the tree: stage them under one path
# that exists outside (for apt) and inside (for dpkg).
stage=$(mktemp -d /tmp/rsio-image-debs-XXXXXX)
cp "${debs[@]}" "$stage/"
for f in "${debs[@]}"; do include=$include,$stage/$(basename "$f"); done

# Documentation, manual pages and translations stay out; copyright files stay in.
excludes=(
  '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*'
  '/usr/share/lintian/*'
  '/lib/modules/*/kernel/sound/*' '/lib/modules/*/kernel/drivers/media/*'
  '/lib/modules/*/kernel/drivers/net/wireless/*' '/lib/modules/*/kernel/drivers/bluetooth/*'
  '/lib/modules/*/kernel/net/bluetooth/*' '/lib/modules/*/kernel/net/mac80211/*'
  '/lib/modules/*/kernel/net/wireless/*'
)
dpkg_opts=()
for p in "${excludes[@]}"; do
  dpkg_opts+=("--dpkgopt=path-exclude=$p")
done
dpkg_opts+=("--dpkgopt=path-include=/usr/share/doc/*/copyright")

cache_opts=()
if [ -n "$use_cache" ]; then
  # Downloaded packages are kept between builds; our own packages never are.
  mkdir -p "$cache"
  cache_opts=(--skip=download/empty --skip=essential/unlink
    --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\"; find '$cache' -maxdepth 1 -name '*.deb' -exec cp -p -t \"\$1/var/cache/apt/archives\" {} +"
    --customize-hook="find '$cache' -maxdepth 1 -name '*.deb' -delete; find \"\$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' ! -name 'rsio*' -exec cp -p -t '$cache' {} +")
fi

comps=${components//,/ }
# The merged-usr hook lays out the merged /usr itself (usr-is-merged), which keeps the usrmerge
# package and perl out of the image.
echo "build.sh: installing Debian 12 into $rootdir (mmdebstrap)"
t0=$(date +%s)
RSIO_IMAGE_HOSTNAME=$hostname RSIO_IMAGE_ROOT_PASSWORD_FILE=$password_file \
  mmdebstrap --variant=minbase --mode=root --format=directory --architectures=amd64 \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='APT::Install-Recommends "false"' \
  "${dpkg_opts[@]}" --include="$include" \
  --setup-hook="mkdir -p \"\$1/etc/initramfs-tools/conf.d\"; cp '$here/rootfs/etc/initramfs-tools/conf.d/rsio-appliance' \"\$1/etc/initramfs-tools/conf.d/\"" \
  --setup-hook="mkdir -p \"\$1$stage\"; cp -p '$stage'/*.deb \"\$1$stage/\"" \
  --customize-hook="rm -rf \"\$1$stage\"" \
  "${cache_opts[@]}" \
  --customize-hook="'$here/customize.sh' \"\$1\"" \
  bookworm "$rootdir" \
  "deb $mirror bookworm $comps" "deb $mirror bookworm-updates $comps" \
  "deb $security bookworm-security $comps" 2>&1 | sed -u 's/^/  /'
t1=$(date +%s)
echo "build.sh: tree ready in $((t1 - t0)) s: $(du -sm "$rootdir" | cut -f1) MiB"

kver=$(cd "$rootdir/lib/modules" && ls | sort -V | tail -n 1)
[ -n "$kver" ] && [ -f "$rootdir/boot/vmlinuz-$kver" ] && [ -f "$rootdir/boot/initrd.img-$kver" ] ||
  fail "no kernel and initramfs in $rootdir/boot"
dpkg-query --admindir="$rootdir/var/lib/dpkg" -W -f '${Package} ${Version}\n' >"$work/packages.txt"

# --- root file system -------------------------------------------------------------------------
# Room for logs, rsiod's database and package updates; on a larger disk the root partition and
# its file system grow at boot (systemd-repart, x-systemd.growfs).
used_mib=$(du -sm "$rootdir" | cut -f1)
root_mib=$(((used_mib * 12 / 10 + 384 + 63) / 64 * 64))
mkfs.ext4 -q -F -L rsio-root -d "$rootdir" "$work/root.ext4" "${root_mib}M" >/dev/null
e2fsck -fn "$work/root.ext4" >/dev/null 2>&1 || fail "the new root file system does not check clean"

# --- EFI system partition ---------------------------------------------------------------------
cmdline="root=LABEL=rsio-root ro console=tty0 console=ttyS0,115200n8 quiet"
esp=$work/esp.vfat
esp_mib=256
mkfs.vfat -C -F 32 -n RSIO-ESP "$esp" $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/rsio ::/rsio/previous
boot_efi=$rootdir/usr/lib/systemd/boot/efi/systemd-bootx64.efi
mcopy -i "$esp" "$boot_efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$boot_efi" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$esp" "$rootdir/boot/vmlinuz-$kver" ::/rsio/vmlinuz
mcopy -i "$esp" "$rootdir/boot/initrd.img-$kver" ::/rsio/initrd.img
echo "$kver" >"$work/version"
mcopy -i "$esp" "$work/version" ::/rsio/version
printf 'default rsio.conf\ntimeout 3\nconsole-mode keep\n' >"$work/loader.conf"
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
cat >"$work/rsio.conf" <<EOF
title   RSIO appliance (Linux $kver)
linux   /rsio/vmlinuz
initrd  /rsio/initrd.img
options $cmdline
EOF
mcopy -i "$esp" "$work/rsio.conf" ::/loader/entries/rsio.conf

# --- the disk image ---------------------------------------------------------------------------
mkdir -p "$work/repart.d"
cat >"$work/repart.d/10-esp.conf" <<EOF
[Partition]
Type=esp
Label=ESP
CopyBlocks=$esp
EOF
cat >"$work/repart.d/20-root.conf" <<EOF
[Partition]
Type=root-x86-64
Label=rsio-root
CopyBlocks=$work/root.ext4
EOF
img=$out/rsio-appliance.img
rm -f "$img.new"
systemd-repart --empty=create --size=auto --dry-run=no --no-pager --definitions="$work/repart.d" \
  "$img.new" >"$work/repart.log" 2>&1 || { cat "$work/repart.log" >&2; fail "systemd-repart failed"; }
# systemd-repart writes every block it copies; give the unused ones back (sparse file).
fallocate --dig-holes "$img.new"
mv "$img.new" "$img"
cp "$rootdir/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$rootdir/boot/initrd.img-$kver" "$out/initrd.img"
echo "$cmdline" >"$out/cmdline"

end_s=$(date +%s)
apparent=$(stat -c %s "$img")
allocated=$(du -B1 "$img" | cut -f1)
{
  echo "RSIO appliance image, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((end_s - start_s)) s"
  echo "kernel: $kver; kernel command line: $cmdline"
  echo "image: $apparent bytes ($((apparent / 1048576)) MiB), $((allocated / 1048576)) MiB allocated (sparse)"
  echo "root file system: ${root_mib} MiB, ${used_mib} MiB used; ESP: ${esp_mib} MiB"
  echo "packages:"
  sed 's/^/  /' "$work/packages.txt"
} >"$out/manifest.txt"
sed -n '1,4p' "$out/manifest.txt" | sed 's/^/build.sh: /'
grep -E '^  rsio' "$out/manifest.txt" | sed 's/^ */build.sh: package inside: /'
echo "build.sh: wrote $img, $out/vmlinuz, $out/initrd.img, $out/cmdline, $out/manifest.txt"
