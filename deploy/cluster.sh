#!/usr/bin/env bash
# Start or stop the loopback cluster of configs/cluster/cluster.yaml as
# separate processes: 3 brokers, 2 gateways, 2 demo workers per family.
#   deploy/cluster.sh up     # pids and logs under $RUN_DIR (default run/cluster)
#   deploy/cluster.sh down
#   deploy/cluster.sh stop broker-2      # SIGTERM one process, wait for its exit
#   deploy/cluster.sh restart broker-2   # start one process again (chaos tests)
#   deploy/cluster.sh restart broker-4   # a fourth broker joins (routes to 1-3)
#   deploy/cluster.sh restart worker-billing-1   # a demo worker of a family
# WORKERS=0 starts no demo workers (tests attach their own).
# PORT_OFFSET shifts every port (tests run a second cluster beside yours).
# CONFIG names the configuration a process is started with (a rolling
# restart with a new file changes the topology).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/sluice}
RUN_DIR=${RUN_DIR:-run/cluster}
OFF=${PORT_OFFSET:-0}
CONFIG=${CONFIG:-configs/cluster/cluster.yaml}

port() { echo $(( $1 + OFF )); }
urls() { echo "nats://127.0.0.1:$(port 4222),nats://127.0.0.1:$(port 4223),nats://127.0.0.1:$(port 4224)"; }

# spec NAME: sets ENVS and ARGS for one process of the cluster.
spec() {
  local name=$1 i
  case "$name" in
    broker-*)
      i=${name#broker-}
      local routes="" j
      # Brokers 4 and up join through the first three (routes gossip).
      for j in 1 2 3; do
        [ "$i" = "$j" ] || routes="${routes:+$routes,}nats-route://127.0.0.1:$(port $((6221 + j)))"
      done
      ENVS=(SLUICE_BROKER_NAME="$name"
        SLUICE_BROKER_LISTEN="127.0.0.1:$(port $((4221 + i)))"
        SLUICE_BROKER_DATA_DIR="$RUN_DIR/data/$name"
        SLUICE_BROKER_OPS_LISTEN="127.0.0.1:$(port $((8221 + i)))"
        SLUICE_BROKER_CLUSTER_LISTEN="127.0.0.1:$(port $((6221 + i)))"
        SLUICE_BROKER_CLUSTER_ROUTES="$routes")
      ARGS=(broker) ;;
    gateway-*)
      i=${name#gateway-}
      ENVS=(SLUICE_BUS_URLS="$(urls)" SLUICE_GATEWAY_LISTEN="127.0.0.1:$(port $((8079 + i)))")
      ARGS=(gateway) ;;
    worker-*)
      local fam=${name#worker-}; fam=${fam%-*}
      ENVS=(SLUICE_BUS_URLS="$(urls)")
      ARGS=(worker --topic orders --family "$fam") ;;
    *) echo "unknown process $name" >&2; exit 2 ;;
  esac
}

start() { # name
  spec "$1"
  env "${ENVS[@]}" "$BIN" "${ARGS[@]}" --config "$CONFIG" >>"$RUN_DIR/logs/$1.log" 2>&1 &
  echo $! >"$RUN_DIR/pids/$1.pid"
}

ready_url() { # name
  case "$1" in
    broker-*) echo "http://127.0.0.1:$(port $((8221 + ${1#broker-})))/readyz" ;;
    gateway-*) echo "http://127.0.0.1:$(port $((8079 + ${1#gateway-})))/readyz" ;;
  esac
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
  for i in 1 2 3; do start "broker-$i"; done
  for i in 1 2 3; do wait_ready "$(ready_url broker-$i)"; done
  for i in 1 2; do start "gateway-$i"; done
  for fam in billing shipping; do
    for i in $(seq 1 "${WORKERS:-2}"); do start "worker-$fam-$i"; done
  done
  for i in 1 2; do wait_ready "$(ready_url gateway-$i)"; done
  echo "Sluice cluster up: gateways http://127.0.0.1:$(port 8080) and http://127.0.0.1:$(port 8081), brokers $(urls)"
  echo "logs: $RUN_DIR/logs   stop: make cluster-down"
}

# restart NAME: start a stopped or killed process again; waits for its
# readiness when it has an endpoint (a lone broker waits for a quorum).
restart() {
  start "$1"
  local u
  u=$(ready_url "$1")
  if [ -n "$u" ] && [ "${WAIT:-1}" = 1 ]; then wait_ready "$u"; fi
}

# stop NAME: SIGTERM one process (a broker or gateway leaves in lame duck)
# and wait until it has exited.
stop() {
  local f="$RUN_DIR/pids/$1.pid" pid
  [ -e "$f" ] || { echo "not running: $1" >&2; return 1; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }; sleep 0.2; done
  echo "$1 did not exit within 30 s of SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
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
  restart) restart "$2" ;;
  stop) stop "$2" ;;
  pid) cat "$RUN_DIR/pids/$2.pid" ;;
  *) echo "usage: $0 up|down|stop NAME|restart NAME|pid NAME" >&2; exit 2 ;;
esac
