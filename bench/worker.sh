#!/usr/bin/env bash
# The worker through a real broker: its events/s against a bare aiokafka passthrough of
# the same records (the ceiling), latency at half its rate, resident memory.
# Starts a throw-away broker (deploy/kafka/local-kafka) unless KAFKA_BOOTSTRAP_SERVERS
# names one.  Results also go to bench/out/worker.json.
# Usage: bench/worker.sh [N]   (default 200000 events)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
py=${PYTHON:-.venv/bin/python}
mkdir -p bench/out
args=(--events "$n" --json bench/out/worker.json)
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  args+=(--bootstrap "$KAFKA_BOOTSTRAP_SERVERS")
fi
exec "$py" bench/worker_bench.py "${args[@]}"
