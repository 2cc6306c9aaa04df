#!/usr/bin/env bash
# kprov's main job on the embedded default: a local file:// state store and the bundled ZStack
# simulator (an aarch64 cluster with NVIDIA A100s for passthrough), no cloud account needed.
#   build → start the simulator → create cluster demo → plan → apply (with progress) →
#   list instances → no-op update → delete → stop the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/kprov-target}

echo "== building kprov and the ZStack simulator"
cargo build --quiet -p kprov --bin kprov && cargo build --quiet -p kprov-zstack-sim --bin kprov-zstack-sim
BIN=$CARGO_TARGET_DIR/debug

WORK=$(mktemp -d /tmp/kprov-quickstart.XXXXXX)
SIM_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/kprov-zstack-sim" --port 0 --port-file "$WORK/port" --state-file "$WORK/zstack-state.json" \
  --job-delay-ms 300 > "$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || { echo "simulator did not start:"; cat "$WORK/sim.log"; exit 1; }
ENDPOINT="http://127.0.0.1:$(cat "$WORK/port")"
echo "== ZStack simulator at $ENDPOINT (state in $WORK)"

# The simulator's account; real clouds take these from the environment or a credentials file,
# never from the command line.
export ZSTACK_ACCOUNT=admin ZSTACK_PASSWORD=password
export KPROV_STATE_STORE="file://$WORK/state"
kprov() { echo; echo "\$ kprov $*"; "$BIN/kprov" "$@"; }

kprov create cluster demo --provider zstack --zstack-endpoint "$ENDPOINT" \
  --arch arm64 --control-plane-size 4:8Gi --node-count 3 --node-size 16:64Gi --gpu A100:1
kprov get instancegroups demo
kprov update cluster demo
kprov update cluster demo --yes
kprov get instances demo
kprov update cluster demo --yes
kprov delete cluster demo --yes
kprov get clusters
echo
echo "== done: cluster demo was created, applied and deleted on the simulator"
