#!/usr/bin/env bash
# kprov's main job on the embedded default: a local file:// state store and the bundled ZStack
# simulator (an aarch64 cluster with NVIDIA A100s for passthrough), no cloud account needed.
#   build prerequisites → build → start the simulator → create cluster demo → plan → apply (with
#   progress) → list instances → no-op update → delete → stop the simulator.
# Works on a fresh Debian machine with a Rust toolchain: it installs what compiling kprov needs
# (the list in tests/peers/packages.sh, shared with the test suite's installer) and stops at the
# first step that fails, with that step's own error.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/kprov-target}
T0=$SECONDS
step() { echo; echo "== $* [$((SECONDS - T0)) s]"; }

step "checking the build prerequisites"
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml) or newer (https://rustup.rs), then re-run" >&2
  exit 1
fi
# shellcheck source=tests/peers/packages.sh
. tests/peers/packages.sh
apt_ensure "${BUILD_PKGS[@]}"

if [ -x "$CARGO_TARGET_DIR/debug/kprov" ]; then
  step "building kprov and the ZStack simulator (incremental)"
else
  step "compiling kprov and the ZStack simulator into $CARGO_TARGET_DIR (the first build takes ~5 min on 2 idle cores, ~8 on busy ones; later ones seconds)"
fi
# One build of the workspace's binaries (kprov, kprov-zstack-sim): one feature resolution, the
# same as the test suite's, so `bash tests/run.sh` after it compiles no dependency twice.
cargo build --quiet --locked --workspace --bins
BIN=$CARGO_TARGET_DIR/debug

WORK=$(mktemp -d /tmp/kprov-quickstart.XXXXXX)
SIM_PID=
cleanup() {
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step "starting the ZStack simulator"
"$BIN/kprov-zstack-sim" --port 0 --port-file "$WORK/port" --state-file "$WORK/zstack-state.json" \
  --job-delay-ms 300 > "$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || { echo "the simulator did not start:"; cat "$WORK/sim.log"; exit 1; }
ENDPOINT="http://127.0.0.1:$(cat "$WORK/port")"
echo "ZStack simulator at $ENDPOINT (state in $WORK)"

# The simulator's account; real clouds take these from the environment or a credentials file,
# never from the command line.
export ZSTACK_ACCOUNT=admin ZSTACK_PASSWORD=password
export KPROV_STATE_STORE="file://$WORK/state"
kprov() { echo; echo "\$ kprov $*"; "$BIN/kprov" "$@"; }

step "running the main job"
kprov create cluster demo --provider zstack --zstack-endpoint "$ENDPOINT" \
  --arch arm64 --control-plane-size 4:8Gi --node-count 3 --node-size 16:64Gi --gpu A100:1
kprov get instancegroups demo
kprov update cluster demo
kprov update cluster demo --yes
kprov get instances demo
kprov update cluster demo --yes
kprov delete cluster demo --yes
kprov get clusters
step "done: cluster demo was created, applied and deleted on the simulator"
