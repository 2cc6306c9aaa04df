#!/usr/bin/env bash
# kprov's whole test suite, from a fresh machine: installs the test peers (Debian packages and a
# Python venv, idempotently), runs the README's quickstart, then checks formatting and lints, then
# runs every test of the workspace against the real peers. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/peers/install.sh
export KPROV_PEERS=${KPROV_PEERS:-/opt/kprov-peers}
export PATH="$KPROV_PEERS/venv/bin:$PATH"

# CI starts from a fresh clone: reuse a build directory outside the clone when there is one
# (dependencies such as aws-sdk-ec2 take minutes to compile); a new machine simply fills it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/kprov-target}
export CARGO_TERM_COLOR=never

# cargo-deny (licence, ban and source checks of the dependency tree, policy in deny.toml), built
# from crates.io once into $KPROV_PEERS/cargo, in the background while the code compiles.
DENY="$KPROV_PEERS/cargo/bin/cargo-deny"
deny_pid=
if [ ! -x "$DENY" ]; then
  deny_log=$(mktemp "${TMPDIR:-/tmp}/kprov-cargo-deny.XXXXXX")
  echo "== building cargo-deny in the background (log: $deny_log)"
  ( CARGO_TARGET_DIR="$KPROV_PEERS/cargo/target" cargo install --locked --quiet \
      --root "$KPROV_PEERS/cargo" cargo-deny@0.20.2 && rm -rf "$KPROV_PEERS/cargo/target" ) \
    >"$deny_log" 2>&1 &
  deny_pid=$!
fi

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

# The README's first command, from this clone as a user runs it; its transcript is checked by
# tests/cli/install.rs (create → plan → apply → no-op → delete).
KPROV_QUICKSTART_TRANSCRIPT=$(mktemp "${TMPDIR:-/tmp}/kprov-quickstart.XXXXXX")
export KPROV_QUICKSTART_TRANSCRIPT
echo "== bash tests/quickstart.sh (transcript: $KPROV_QUICKSTART_TRANSCRIPT)"
bash tests/quickstart.sh 2>&1 | tee "$KPROV_QUICKSTART_TRANSCRIPT"

# A kprov without the libvirt provider, as `cargo install --no-default-features --features
# zstack,aws` builds it (tests/cli/install.rs checks it refuses libvirt). Same target directory, so
# only the kprov crate itself is compiled again; the default binary is linked back right after.
echo "== building kprov without libvirt"
# (The simulator is selected too, only so that the shared dependencies resolve to the same
# features as the default build and are not compiled a second time.)
cargo build --quiet --locked -p kprov -p kprov-zstack-sim --bins --no-default-features \
  --features kprov/zstack,kprov/aws
export KPROV_NO_LIBVIRT_BIN=$CARGO_TARGET_DIR/kprov-no-libvirt
cp "$CARGO_TARGET_DIR/debug/kprov" "$KPROV_NO_LIBVIRT_BIN"
cargo build --quiet --locked --workspace --bins

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# `advisories` is left out: it fetches the RustSec database over the network, which CI lacks.
echo "== cargo deny check licenses bans sources"
if [ -n "$deny_pid" ] && ! wait "$deny_pid"; then
  echo "building cargo-deny failed:"; cat "$deny_log"; exit 1
fi
"$DENY" deny --log-level error check licenses bans sources
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
