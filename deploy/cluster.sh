#!/usr/bin/env bash
# Start or stop the loopback cluster of configs/cluster/cluster.yaml as
# separate processes: 3 brokers, 2 gateways, 2 demo workers per family.
#   deploy/cluster.sh up     # pids and logs under $RUN_DIR (default run/cluster)
#   deploy/cluster.sh down
# PORT_OFFSET shifts every port (tests run a second cluster beside yours).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/sluice}
RUN_DIR=${RUN_DIR:-run/cluster}
OFF=${PORT_OFFSET:-0}
CONFIG=configs/cluster/cluster.yaml

port() { echo $(( $1 + OFF )); }
urls() { echo "nats://127.0.0.1:$(port 4222),nats://127.0.0.1:$(port 4223),nats://127.0.0.1:$(port 4224)"; }

start() { # name, args...
  local name=$1; shift
  env "${ENVS[@]}" "$BIN" "$@" --config "$CONFIG" >"$RUN_DIR/logs/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/pids/$name.pid"
}

wait_ready() { # url
  for _ in $(seq 1 300); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "not ready: $1" >&2
  return 1
}

up() {
  [ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }
  mkdir -p "$RUN_DIR/pids" "$RUN_DIR/logs" "$RUN_DIR/data"
  for i in 1 2 3; do
    routes=""
    for j in 1 2 3; do
      [ "$i" = "$j" ] || routes="${routes:+$routes,}nats-route://127.0.0.1:$(port $((6221 + j)))"
    done
    ENVS=(SLUICE_BROKER_NAME="broker-$i"
      SLUICE_BROKER_LISTEN="127.0.0.1:$(port $((4221 + i)))"
      SLUICE_BROKER_DATA_DIR="$RUN_DIR/data/broker-$i"
      SLUICE_BROKER_OPS_LISTEN="127.0.0.1:$(port $((8221 + i)))"
      SLUICE_BROKER_CLUSTER_LISTEN="127.0.0.1:$(port $((6221 + i)))"
      SLUICE_BROKER_CLUSTER_ROUTES="$routes")
    start "broker-$i" broker
  done
  for i in 1 2 3; do wait_ready "http://127.0.0.1:$(port $((8221 + i)))/readyz"; done
  for i in 1 2; do
    ENVS=(SLUICE_BUS_URLS="$(urls)" SLUICE_GATEWAY_LISTEN="127.0.0.1:$(port $((8079 + i)))")
    start "gateway-$i" gateway
  done
  for fam in billing shipping; do
    for i in 1 2; do
      ENVS=(SLUICE_BUS_URLS="$(urls)")
      start "worker-$fam-$i" worker --topic orders --family "$fam"
    done
  done
  for i in 1 2; do wait_ready "http://127.0.0.1:$(port $((8079 + i)))/readyz"; done
  echo "Sluice cluster up: gateways http://127.0.0.1:$(port 8080) and http://127.0.0.1:$(port 8081), brokers $(urls)"
  echo "logs: $RUN_DIR/logs   stop: make cluster-down"
}

down() {
  [ -d "$RUN_DIR/pids" ] || { echo "no cluster running under $RUN_DIR"; return 0; }
  # Workers and gateways first (they drain), brokers last.
  for group in worker gateway broker; do
    for f in "$RUN_DIR"/pids/$group-*.pid; do
      [ -e "$f" ] || continue
      kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$RUN_DIR"/pids/$group-*.pid; do
      [ -e "$f" ] || continue
      pid=$(cat "$f")
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$f"
    done
  done
  echo "Sluice cluster down (data kept in $RUN_DIR/data)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
