#!/usr/bin/env bash
# Wait until both gateways of the compose demo answer /readyz 200 (they are
# ready once the brokers have a quorum and the topology is provisioned).
set -euo pipefail
for port in "${SLUICE_DEMO_GATEWAY_1:-8080}" "${SLUICE_DEMO_GATEWAY_2:-8081}"; do
  for i in $(seq 1 ${WAIT_TRIES:-900}); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    if [ "$i" = "${WAIT_TRIES:-900}" ]; then echo "gateway on :$port not ready" >&2; exit 1; fi
    sleep 0.2
  done
done
