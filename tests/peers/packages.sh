#!/usr/bin/env bash
# The one list of Debian packages kprov needs, by purpose, and the one way they are installed.
# Sourced by tests/quickstart.sh (BUILD_PKGS only: what compiling kprov needs) and by
# tests/peers/install.sh (everything: the build, the test peers and the VM tests).
#   apt_ensure PKG...   installs those not installed yet (idempotent; nothing to do = no apt call)

# Compiling kprov with its default features: the libvirt provider links libvirt (virt-sys finds
# it through pkg-config); the etcd client (etcd-client, tonic) compiles etcd's protobufs with
# protoc. gcc comes with the machine (build-essential on Debian).
BUILD_PKGS=(pkg-config libvirt-dev protobuf-compiler)

# Test peers: cloud-init (schema validator), containerd (config + real pulls), docker-registry
# (OCI registry), skopeo (cross-check), openssl, libvirt (test driver, virsh, virt-xml-validate,
# which runs xmllint from libxml2-utils: only recommended, so named here), nginx (file repository
# and WebDAV PUT target of the mirror tests), python3-venv (moto, kubernetes-validate), etcd
# (etcd-server: real members for kprov's etcd client; etcd-client: etcdctl snapshot restore).
PEER_PKGS=(cloud-init containerd docker-registry skopeo openssl libvirt-clients libxml2-utils
  libvirt-daemon python3-venv nginx etcd-server etcd-client)

# libvirt VM tests (tests/libvirt/libvirt_vm.rs, benches/libvirt.rs): libvirtd + QEMU (x86_64 and
# aarch64 system emulators, UEFI firmware, user-mode emulation for arm64 image builds),
# mmdebstrap + partitioning/GRUB tools for the test image, xorriso (seed ISO check), nc (guestfwd).
VM_PKGS=(libvirt-daemon-system qemu-system-x86 qemu-system-arm qemu-efi-aarch64 qemu-user-static
  binfmt-support arch-test mmdebstrap fdisk grub-pc-bin xorriso netcat-openbsd e2fsprogs)

# Install the packages of "$@" that are missing. As root directly, otherwise through sudo; with
# neither, print the command to run and fail (a build without them fails later, less clearly).
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "kprov needs these packages (Debian names): ${missing[*]}; install them with your package manager, then re-run" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "kprov needs these Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
      return 1
    fi
  fi
  echo "installing Debian packages: ${missing[*]}"
  # The machine image may carry qemu-utils from bookworm-backports, which Breaks bookworm's
  # qemu-system-*; bookworm's qemu-utils is installed instead (a downgrade), once.
  local downgrade=()
  if [[ " ${missing[*]} " == *" qemu-system-"* ]] && dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    downgrade=(qemu-utils/bookworm)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${missing[@]}" "${downgrade[@]}" >/dev/null
}
