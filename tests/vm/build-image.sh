#!/usr/bin/env bash
# Build the small Debian bookworm cloud image kprov's libvirt VM tests boot, from Debian packages
# only (mmdebstrap; no loop devices, no mounts, no chroot).
#
#   ARCH=amd64 tests/vm/build-image.sh   -> $OUT/base.qcow2 (BIOS/GRUB bootable, MBR, ext4)
#   ARCH=arm64 tests/vm/build-image.sh   -> $OUT/base.qcow2 + vmlinuz + initrd.img + cmdline
#                                           (no boot loader: direct kernel boot)
#
# OUT defaults to /var/cache/kprov-test-images/$ARCH-<first 16 hex of this script's SHA-256>, so
# a changed script builds a new image and reruns on the same machine reuse the cached one (the
# build is skipped when $OUT/base.qcow2 exists). Prints the image directory as its last line.
# Needs root and: mmdebstrap fdisk e2fsprogs qemu-utils grub-pc-bin (amd64); arm64 also
# qemu-user-static + binfmt_misc + arch-test (see tests/vm/host-setup.sh --arm64).
#
# The image is a *bare* OS, like a stock cloud image on a restricted network: cloud-init (NoCloud
# datasource only), iptables, ethtool, iproute2, curl, kmod, procps — but no containerd, runc,
# conntrack or socat. The VM tests give nodes those the way kprov's users do: the runtime from
# the file repository, conntrack and socat from an internal APT repository
# (spec.assets.packageRepository). For that repository the build keeps those packages' .debs
# (with the dependencies the image lacks; downloaded, not installed) in $OUT/debs; the tests
# index and serve them on a loopback port (kprov_testkit::vm::apt_repo).
# kprov-egress-audit.service logs every new outgoing connection from early boot on (kernel log,
# prefix `kprov-egress:`) so the air-gap test can prove what the guest tried to reach.
set -euo pipefail

ARCH=${ARCH:-amd64}
HERE=$(cd "$(dirname "$0")" && pwd)
KEY=$(cat "$HERE/build-image.sh" "$HERE/kprov-egress-audit.service" | sha256sum | cut -c1-16)
CACHE=${KPROV_TEST_IMAGES:-/var/cache/kprov-test-images}
OUT=${OUT:-$CACHE/$ARCH-$KEY}
SIZE=${SIZE:-2G}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECMIRROR=${SECMIRROR:-http://deb.debian.org/debian-security}

# One build per image at a time (tests/run.sh starts the builds early in the background; a test
# asking for the same image meanwhile waits here, then finds it cached).
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9
if [ -s "$OUT/base.qcow2" ] && [ -s "$OUT/cmdline" ] && [ -d "$OUT/debs" ]; then
  echo "cached image: $OUT" >&2
  echo "$OUT"
  exit 0
fi
case $ARCH in
  amd64) KPKG=linux-image-cloud-amd64 CON=ttyS0 ;;
  arm64) KPKG=linux-image-cloud-arm64 CON=ttyAMA0 ;;
  *) echo "unsupported ARCH=$ARCH" >&2; exit 2 ;;
esac
for t in mmdebstrap sfdisk mkfs.ext4 qemu-img; do
  command -v "$t" >/dev/null || { echo "build-image: $t is missing; run: bash tests/peers/install.sh" >&2; exit 3; }
done
[ "$ARCH" = amd64 ] && { [ -f /usr/lib/grub/i386-pc/boot.img ] || { echo "build-image: grub-pc-bin is missing; run: bash tests/peers/install.sh" >&2; exit 3; }; }

WORK=$OUT.tmp.$$
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s.%N)
stamp() { awk -v a="$(date +%s.%N)" -v b="$t0" -v m="$*" 'BEGIN{printf "[%6.1fs] %s\n", a-b, m}' >&2; }

ROOTFS=$WORK/rootfs
stamp "mmdebstrap $ARCH start"
PKGS=systemd-sysv,udev,dbus,$KPKG,initramfs-tools,cloud-init,cloud-guest-utils,openssh-server,sudo,ifupdown,isc-dhcp-client,netbase,iproute2,e2fsprogs
PKGS=$PKGS,iptables,ethtool,curl,ca-certificates,kmod,procps
# Downloaded for the tests' APT repository and file repository, not installed.
LATER="containerd runc conntrack socat"
mkdir -p "$WORK/debs"
mmdebstrap --variant=minbase --architectures="$ARCH" \
  --include="$PKGS" \
  --aptopt='Acquire::Languages "none"' \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='echo kprov-test > "$1/etc/hostname"' \
  --customize-hook='printf "LABEL=root / ext4 errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d" && printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90-kprov-datasource.cfg"' \
  --customize-hook='printf "locale: C.UTF-8\n" > "$1/etc/cloud/cloud.cfg.d/91-kprov-locale.cfg"' \
  --customize-hook='printf "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n" > "$1/etc/network/interfaces"' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*key*' \
  --customize-hook="mkdir -p \"\$1/var/tmp/kprov-debs/partial\" && chroot \"\$1\" apt-get install -y -q --download-only --no-install-recommends -o Dir::Cache::Archives=/var/tmp/kprov-debs $LATER && mv \"\$1\"/var/tmp/kprov-debs/*.deb '$WORK/debs/' && rm -rf \"\$1/var/tmp/kprov-debs\"" \
  --customize-hook="mkdir -p \"\$1/etc/systemd/system/sysinit.target.wants\" && cp '$HERE/kprov-egress-audit.service' \"\$1/etc/systemd/system/\" && ln -sf ../kprov-egress-audit.service \"\$1/etc/systemd/system/sysinit.target.wants/kprov-egress-audit.service\"" \
  --customize-hook='chroot "$1" apt-get clean; rm -rf "$1"/var/lib/apt/lists/*' \
  bookworm "$ROOTFS" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main" >&2
stamp "mmdebstrap done: $(du -sh "$ROOTFS" | cut -f1) rootfs"

KVER=$(basename "$(ls -1 "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
UUID=$(cat /proc/sys/kernel/random/uuid)
if [ "$ARCH" = amd64 ]; then
  GRUBLIB=/usr/lib/grub/i386-pc
  mkdir -p "$ROOTFS/boot/grub/i386-pc"
  cp "$GRUBLIB"/*.mod "$GRUBLIB"/*.lst "$ROOTFS/boot/grub/i386-pc/"
  cat > "$ROOTFS/boot/grub/grub.cfg" <<GRUB
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $UUID
linux /boot/vmlinuz-$KVER root=UUID=$UUID ro console=tty0 console=$CON,115200n8
initrd /boot/initrd.img-$KVER
boot
GRUB
fi
cp "$ROOTFS/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$WORK/initrd.img"

RAW=$WORK/disk.raw PART=$WORK/part.img
truncate -s "$SIZE" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
PSECT=$(sfdisk -d "$RAW" | awk -F'size=' '/start=/{split($2,a,","); gsub(/ /,"",a[1]); print a[1]}')
truncate -s $((PSECT * 512)) "$PART"
mkfs.ext4 -q -L root -U "$UUID" -d "$ROOTFS" "$PART"
dd if="$PART" of="$RAW" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$PART"
stamp "ext4 root written"
if [ "$ARCH" = amd64 ]; then
  grub-mkimage -O i386-pc -o "$WORK/core.img" -p "(hd0,msdos1)/boot/grub" biosdisk part_msdos ext2
  dd if="$GRUBLIB/boot.img" of="$RAW" bs=440 count=1 conv=notrunc status=none
  dd if="$WORK/core.img" of="$RAW" bs=512 seek=1 conv=notrunc status=none
  stamp "grub written"
fi
qemu-img convert -c -O qcow2 "$RAW" "$WORK/base.qcow2"
rm -rf "$RAW" "$ROOTFS" "$WORK/core.img"
echo "root=UUID=$UUID ro console=$CON" > "$WORK/cmdline"
echo "$KVER" > "$WORK/kernel-version"
rm -rf "$OUT"; mv "$WORK" "$OUT"
trap - EXIT
stamp "image $OUT: $(du -h "$OUT/base.qcow2" | cut -f1) qcow2"
echo "$OUT"
