#!/usr/bin/env bash
# Undo what tests/vm/host-setup.sh changed (recorded in /run/kprov-vm-test/): stop the daemons it
# started (by their pidfiles' PIDs), restore /dev/kvm; with --arm64 also remove the binfmt
# registration it added (only then: an arm64 image build may be using it).
# The seccomp_sandbox line stays (harmless, and another run would add it again).
set -uo pipefail
ST=/run/kprov-vm-test
[ -d "$ST" ] || exit 0
# Domains still defined (someone else's): leave the daemons running.
if [ -n "$(virsh -q -c qemu:///system list --all --name 2>/dev/null | tr -d '[:space:]')" ]; then
  rm -f "$ST/started-libvirtd" "$ST/started-virtlogd"
fi
for d in libvirtd virtlogd; do
  if [ -f "$ST/started-$d" ] && [ -f "/run/$d.pid" ]; then
    pid=$(cat "/run/$d.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$ST/started-$d"
  fi
done
if [ -f "$ST/kvm-perms" ] && [ -c /dev/kvm ]; then
  read -r mode owner < "$ST/kvm-perms"; chown "$owner" /dev/kvm; chmod "$mode" /dev/kvm
fi
rm -f "$ST/kvm-perms"
if [ "${1:-}" = --arm64 ] && [ -f "$ST/binfmt-added" ]; then
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
  rm -f "$ST/binfmt-added"
fi
