#!/usr/bin/env bash
# Start virtlogd + libvirtd by hand for kprov's VM tests (no systemd as PID 1 on CI machines).
# Idempotent: daemons already running (pidfiles /run/virtlogd.pid, /run/libvirtd.pid) are kept.
#   tests/vm/host-setup.sh          start (and configure) what is missing
#   tests/vm/host-setup.sh --arm64  also register qemu-aarch64 with binfmt_misc (arm64 image builds)
# Changes it makes, recorded under /run/kprov-vm-test/ so host-teardown.sh can undo them:
#   * `seccomp_sandbox = 0` in /etc/libvirt/qemu.conf (slirp's guestfwd=…-cmd:nc must spawn nc);
#     libvirtd is restarted once if it was running without it (only if this script started it);
#   * /dev/kvm root:kvm 0660 (what udev would do; without it libvirt re-probes QEMU on every
#     define: ~50 s each);
#   * which daemons it started.
set -euo pipefail
ST=/run/kprov-vm-test
mkdir -p "$ST"
for t in /usr/sbin/libvirtd /usr/sbin/virtlogd qemu-system-x86_64 nc; do
  command -v "$t" >/dev/null || { echo "host-setup: $t is missing; run: bash tests/peers/install.sh" >&2; exit 3; }
done
CONF=/etc/libvirt/qemu.conf
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! grep -q '^seccomp_sandbox = 0' "$CONF"; then
  echo 'seccomp_sandbox = 0   # kprov VM tests: slirp guestfwd cmd: needs to spawn' >> "$CONF"
  touch "$ST/seccomp-added"
  if alive /run/libvirtd.pid && [ -f "$ST/started-libvirtd" ]; then
    kill "$(cat /run/libvirtd.pid)"; for _ in $(seq 1 50); do alive /run/libvirtd.pid || break; sleep 0.1; done
  fi
fi
if [ -c /dev/kvm ]; then
  [ -f "$ST/kvm-perms" ] || stat -c '%a %U:%G' /dev/kvm > "$ST/kvm-perms"
  getent group kvm >/dev/null && chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
if ! alive /run/virtlogd.pid; then /usr/sbin/virtlogd -d; touch "$ST/started-virtlogd"; fi
if ! alive /run/libvirtd.pid; then /usr/sbin/libvirtd -d; touch "$ST/started-libvirtd"; fi
for _ in $(seq 1 300); do
  [ -S /run/libvirt/libvirt-sock ] && virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.1
done
virsh -q -c qemu:///system version >/dev/null
if [ "${1:-}" = --arm64 ]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
    touch "$ST/binfmt-added"
  fi
fi
echo "host-setup: libvirtd $(cat /run/libvirtd.pid), virtlogd $(cat /run/virtlogd.pid)"
