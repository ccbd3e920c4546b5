#!/bin/bash
# Turns the Debian tree that mmdebstrap installed into the RSIO appliance's root file system.
# image/build.sh runs it as mmdebstrap's customize hook: ROOT is the new tree, all packages are
# installed, and ROOT/proc, /sys and /dev are mounted.
#
# Usage: customize.sh ROOT
# Environment: RSIO_IMAGE_HOSTNAME (default rsio), RSIO_IMAGE_ROOT_PASSWORD_FILE (optional:
# a file holding root's password; without it root has no password and logs in only on the
# serial console, automatically).
set -euo pipefail
root=${1:?usage: $0 ROOT}
src=$(cd "$(dirname "$0")" && pwd)
host=${RSIO_IMAGE_HOSTNAME:-rsio}

# The overlay: network, console, first-boot setup, ESP hook, repart definitions. Extracted
# over the tree without replacing the /lib -> usr/lib links of the merged /usr.
tar -C "$src/rootfs" --owner=0 --group=0 -cf - . |
  tar -C "$root" -xf - --keep-directory-symlink --no-overwrite-dir
install -D -m 0644 "$src/README.md" "$root/usr/share/doc/rsio-appliance/README.md"

echo "$host" >"$root/etc/hostname"
cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$host
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF

# Root is checked and mounted read-only by the initramfs, then read-write; it grows to the end
# of its partition (which systemd-repart grows to the end of the disk). The ESP is mounted
# for kernel updates (rsio-esp-update) but never stops a boot.
cat >"$root/etc/fstab" <<'EOF'
# <file system>    <mount point>  <type>  <options>                                   <dump> <pass>
LABEL=rsio-root    /              ext4    defaults,errors=remount-ro,x-systemd.growfs  0      1
LABEL=RSIO-ESP     /boot/efi      vfat    umask=0077,nofail                            0      2
EOF
mkdir -p "$root/boot/efi"

echo "LANG=C.UTF-8" >"$root/etc/default/locale"

# Name resolution from DHCP through systemd-resolved.
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Every appliance gets its own machine id on its first boot.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service \
  rsio-setup.service rsiod.service serial-getty@ttyS0.service
# systemd-firstboot would ask for locale, time zone and a root password on the console at
# the first boot; the appliance has its settings.
chroot "$root" systemctl mask systemd-firstboot.service

if [ -n "${RSIO_IMAGE_ROOT_PASSWORD_FILE:-}" ]; then
  printf 'root:%s\n' "$(head -n 1 "$RSIO_IMAGE_ROOT_PASSWORD_FILE")" | chroot "$root" chpasswd
  echo "customize: root password set from $RSIO_IMAGE_ROOT_PASSWORD_FILE"
else
  chroot "$root" passwd -l root >/dev/null
fi

# With openssh-server (build.sh --include openssh-server): no host keys in the image; each
# appliance makes its own before sshd first starts.
if [ -e "$root/lib/systemd/system/ssh.service" ]; then
  rm -f "$root"/etc/ssh/ssh_host_*
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  cat >"$root/etc/systemd/system/ssh.service.d/rsio-host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
fi

# Logs of the build do not belong to the appliance.
find "$root/var/log" -type f -exec truncate -s 0 {} +
rm -f "$root/etc/initramfs-tools/conf.d/resume"
