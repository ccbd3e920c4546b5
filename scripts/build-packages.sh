#!/usr/bin/env bash
# Builds the Debian packages (rsio-server, rsio-client, rsio-tools) into build/packages with
# dpkg-buildpackage. Installs the packaging tools when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    debhelper dpkg-dev >/dev/null
fi
dpkg-buildpackage -us -uc -b
mkdir -p build/packages
mv ../rsio*_*.deb ../rsio_*.buildinfo ../rsio_*.changes build/packages/ 2>/dev/null || true
ls -l build/packages
