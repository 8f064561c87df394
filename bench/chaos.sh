#!/usr/bin/env bash
# The fault-injection run by hand: N mixed raw events (every provider, generic DSN, ~5 %
# poison) through three worker processes while workers are killed (-9), stopped (SIGTERM),
# join and leave, and the broker is stopped for 30 s and killed mid-transaction; then
# every input offset is accounted for.  Both guarantee modes, one table each on stdout;
# exit status non-zero if anything is lost, dead letters != poison, or exactly_once
# shows a duplicate.  Runs its own broker (deploy/kafka/local-kafka): it must stop and
# restart it.  The JSON report goes to bench/out/chaos.json.  See docs/reliability.md.
# Usage: bench/chaos.sh [N] [extra run.py options]   (default N = 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
shift || true
py=${PYTHON:-.venv/bin/python}
mkdir -p bench/out
exec "$py" tests/chaos/run.py --events "$n" --mode both --outage 30 --json bench/out/chaos.json "$@"
