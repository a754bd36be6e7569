#!/usr/bin/env bash
# Runs one jetchat-bench scenario against a 3-node NATS JetStream cluster
# (the repository's nats.conf, on loopback) and GATEWAYS jetchat gateways
# (default 3) with --replicas 3 and --enforce-ownership: every process on
# this machine, sharing its cores with the load tool.
#   GATEWAYS=2 scripts/bench-cluster.sh dm --users 1000 --rate 0 --duration 20s
# Users are spread by the ring: the load tool asks GET /v1/route for each
# (--route) and connects to the owner. Binaries go to $BIN (default
# /tmp/jetchat-bin; NOBUILD=1 runs those already there); the cluster's
# files and logs to a temporary folder, removed afterwards (KEEP=1 keeps
# it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-/tmp/jetchat-bin}
GATEWAYS=${GATEWAYS:-3}
GATEWAY_FLAGS=${GATEWAY_FLAGS:-} # more serve flags for every gateway
mkdir -p "$BIN"
if [ -z "${NOBUILD:-}" ]; then # NOBUILD=1 runs the binaries already in $BIN (before/after runs)
  go build -o "$BIN/jetchat" ./cmd/jetchat
  go build -o "$BIN/jetchat-bench" ./cmd/jetchat-bench
  go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
fi
DIR=$(mktemp -d /tmp/jetchat-cluster.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
ulimit -n 19900 2>/dev/null || true

# The passwords nats.conf reads (bench values).
for v in JETCHAT_NATS_PASSWORD NATS_ADMIN_PASSWORD NATS_SYS_PASSWORD SVC_ECHO_PASSWORD SVC_PUSH_PASSWORD SVC_AUDIT_PASSWORD; do
  export "$v=bench-$v"
done
SECRET=jetchat-cluster-bench-secret-0123456789abcdef
ROUTES=nats-route://127.0.0.1:16221,nats-route://127.0.0.1:16222,nats-route://127.0.0.1:16223
URLS=nats://127.0.0.1:14221,nats://127.0.0.1:14222,nats://127.0.0.1:14223
for i in 1 2 3; do
  mkdir -p "$DIR/nats-$i"
  NATS_SERVER_NAME=nats-$i NATS_STORE_DIR="$DIR/nats-$i" "$BIN/nats-server" -c nats.conf \
    -a 127.0.0.1 -p 1422$i -m 1822$i --cluster nats://127.0.0.1:1622$i --routes "$ROUTES" \
    > "$DIR/nats-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:1822$i/healthz" >/dev/null && break; sleep 0.1; done
done
GWS=""
for i in $(seq 1 "$GATEWAYS"); do
  DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/jetchat_bench_cluster?sslmode=disable} \
  "$BIN/jetchat" serve --data "$DIR/gw-$i" --http "127.0.0.1:1808$i" --nats-url "$URLS" \
    --nats-user jetchat --nats-password "$JETCHAT_NATS_PASSWORD" --replicas 3 \
    --gateway-id "gw-$i" --public-url "ws://127.0.0.1:1808$i/v1/ws" --enforce-ownership \
    --jwt-secret "$SECRET" --send-rate 1000000 --send-burst 1000000 --log-level warn $GATEWAY_FLAGS \
    > "$DIR/gw-$i.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:1808$i/healthz" >/dev/null && break; sleep 0.1; done
  GWS="$GWS${GWS:+,}http://127.0.0.1:1808$i"
done
sleep 3 # every gateway sees every other in the registry
SCENARIO=$1; shift
"$BIN/jetchat-bench" "$SCENARIO" --url "http://127.0.0.1:18081" --gateways "$GWS" --route --jwt-secret "$SECRET" "$@"
