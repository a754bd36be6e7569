#!/usr/bin/env bash
# Runs one jetchat-bench scenario against a fresh single node, both as
# separate processes on this machine (they share its cores).
#   scripts/bench.sh "<serve flags>" <scenario> [bench flags...]
# Example:
#   scripts/bench.sh "--fsync always" dm --users 1000 --rate 3000 --duration 20s
# Binaries go to $BIN (default /tmp/jetchat-bin); the node's data to a fresh
# temporary folder, removed afterwards. The node's log is $BIN/node.log.
# NODE_GOGC, when set, is the node's GOGC; GOGC, when set, is the load tool's
# (and the node's, without NODE_GOGC). Unset, the node runs at 100 and the
# tool at its own default, 400. NOBUILD=1 runs the binaries already in $BIN
# (for alternated before/after runs of two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-/tmp/jetchat-bin}
mkdir -p "$BIN"
if [ -z "${NOBUILD:-}" ]; then
  go build -o "$BIN/jetchat" ./cmd/jetchat
  go build -o "$BIN/jetchat-bench" ./cmd/jetchat-bench
fi
SERVE_FLAGS=$1; shift
DATA=$(mktemp -d /tmp/jetchat-bench-data.XXXXXX)
PORT=${PORT:-18080}
ulimit -n 19900 2>/dev/null || true
# shellcheck disable=SC2086
GOGC=${NODE_GOGC:-${GOGC:-100}} "$BIN/jetchat" serve --data "$DATA" --http "127.0.0.1:$PORT" --nats-listen none \
  --send-rate 1000000 --send-burst 1000000 --log-level warn --debug-addr 127.0.0.1:16060 $SERVE_FLAGS > "$BIN/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
"$BIN/jetchat-bench" "$@" --url "http://127.0.0.1:$PORT" --data "$DATA"
