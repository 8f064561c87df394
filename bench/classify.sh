#!/usr/bin/env bash
# Throughput of `bounce-consumer classify` as a whole process, pinned to one core.
# Usage: bench/classify.sh [N]   (default 200000 events)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
py=${PYTHON:-.venv/bin/python}
mkdir -p bench/out
"$py" bench/gen_generic.py "$n" > bench/out/generic.jsonl
echo "events: $n, distinct texts: $(sort -u bench/out/generic.jsonl | wc -l)" >&2
start=$(date +%s.%N)
taskset -c 0 "$py" -m consumer classify bench/out/generic.jsonl > bench/out/events.jsonl
end=$(date +%s.%N)
python3 - "$n" "$start" "$end" <<'PY'
import sys
n, start, end = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"classify: {n} events in {end - start:.2f} s = {n / (end - start):,.0f} events/s (one core)")
PY
