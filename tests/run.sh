#!/usr/bin/env bash
# kprov's whole test suite, from a fresh machine: installs the test peers (Debian packages and a
# Python venv, idempotently), then checks formatting and lints, then runs every test of the
# workspace against the real peers. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/peers/install.sh
export KPROV_PEERS=${KPROV_PEERS:-/opt/kprov-peers}
export PATH="$KPROV_PEERS/venv/bin:$PATH"

# CI starts from a fresh clone: reuse a build directory outside the clone when there is one
# (dependencies such as aws-sdk-ec2 take minutes to compile); a new machine simply fills it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/kprov-target}
export CARGO_TERM_COLOR=never

# The VM tests' images (Debian, built from packages; arm64 under qemu-user takes ~9 min on a new
# machine) are built in the background while the code compiles; the tests wait for them and
# reuse them (cached by content under /var/cache/kprov-test-images). If this fails, the VM tests
# build them again and report why.
if [ "$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null; then
  images_log=$(mktemp "${TMPDIR:-/tmp}/kprov-images.XXXXXX")
  echo "== building VM test images in the background (log: $images_log)"
  ( bash tests/vm/host-setup.sh --arm64 && ARCH=amd64 bash tests/vm/build-image.sh \
      && ARCH=arm64 bash tests/vm/build-image.sh ) >"$images_log" 2>&1 &
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every kprov run of the suite is recorded (tests/peers/audit-run.sh) and scanned for leaked
# secrets afterwards (tests/peers/leakscan.py): argv, stdout, stderr and a debug log of each.
KPROV_AUDIT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kprov-audit.XXXXXX")
export KPROV_AUDIT_DIR
echo "== secret-leak scanner self-test"
python3 tests/peers/leakscan.py --self-test >/dev/null
echo "== cargo test"
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
echo "== secret-leak scan of every kprov run ($KPROV_AUDIT_DIR)"
if python3 tests/peers/leakscan.py "$KPROV_AUDIT_DIR"; then
  rm -rf "$KPROV_AUDIT_DIR"
else
  status=1
  echo "the audit records stay in $KPROV_AUDIT_DIR for inspection"
fi
wait
exit $status
