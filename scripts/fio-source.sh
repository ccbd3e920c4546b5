#!/usr/bin/env bash
# Prepares a configured source tree of the installed fio version in build/fio-src, which the
# build needs for the fio engine (fio installs no headers). Uses Debian's source package;
# enables the deb-src entries of the configured Debian archive if none are present.
# Prints the tree's path. Exits non-zero (with the reason) when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=build/fio-src
version=$(dpkg-query -W -f='${Version}' fio 2>/dev/null || true)
if [ -z "$version" ]; then
  echo "fio-source: fio is not installed" >&2
  exit 1
fi
upstream=${version%-*}
tree="$dest/fio-$upstream"
if [ -f "$tree/config-host.h" ]; then
  echo "$(pwd)/$tree"
  exit 0
fi
mkdir -p "$dest"
if ! apt-get source --print-uris -qq fio >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "fio-source: no deb-src entries and not root to add them" >&2
    exit 1
  fi
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/rsio-debian-src.sources
  else
    grep -h '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
      > /etc/apt/sources.list.d/rsio-debian-src.list
  fi
  apt-get update -qq >&2
fi
(cd "$dest" && apt-get source -qq --download-only "fio=$version" >&2)
tar xzf "$dest/fio_$upstream.orig.tar.gz" -C "$dest"
(cd "$tree" && ./configure --disable-native >/dev/null)
echo "$(pwd)/$tree"
