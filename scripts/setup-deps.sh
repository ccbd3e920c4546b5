#!/usr/bin/env bash
# Installs every package RSIO needs to build and test, from Debian 12's archive.
# Safe to run repeatedly; does nothing for packages already installed.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-deps: must run as root (it installs Debian packages with apt-get)" >&2
  echo "setup-deps: try: sudo $0" >&2
  exit 1
fi

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # manual pages (docs/man/*.scd)
  scdoc
  # libraries
  libboost1.81-dev liburing-dev libsqlite3-dev libcli11-dev nlohmann-json3-dev
  libssl-dev libsystemd-dev libfmt-dev libfuse3-dev zlib1g-dev
  # tests
  libgtest-dev libgmock-dev sqlite3
  # tools the walk-through and tests use
  e2fsprogs util-linux procps curl python3 fio iproute2 iptables fuse3
  # peers the protocol benchmark compares against
  nbdkit qemu-utils
  # the power-cut test (tests/durability): nbdfuse for its volatile disks, PostgreSQL for pgbench
  libnbd-bin postgresql-15
  # the ublk guest test boots Debian's 6.12 kernel in qemu (TCG) from a busybox initramfs
  qemu-system-x86 busybox-static cpio
  # the appliance image (image/build.sh) and its boot test: UEFI firmware for qemu
  mmdebstrap mtools dosfstools ovmf
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all ${#packages[@]} packages already installed"
else
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# fio installs no headers; the fio engine is built against fio's configured source package.
if fio_tree=$("$(dirname "$0")/fio-source.sh"); then
  echo "setup-deps: fio source for the fio engine in $fio_tree"
else
  echo "setup-deps: SKIP fio engine: fio's source package is not available (see above)"
fi
echo "setup-deps: done"
