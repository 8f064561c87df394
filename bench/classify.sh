#!/usr/bin/env bash
# Throughput of `bounce-consumer classify` as a whole process, pinned to one core, on
# the compiled fast path (native/, used when consumer_native is installed) and on the
# pure Python path (--no-native), over the same generated input; the two outputs must
# be byte-identical.
# Usage: bench/classify.sh [N] [both|native|python]   (default 200000 events, both)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
paths=${2:-both}
py=${PYTHON:-.venv/bin/python}
mkdir -p bench/out
"$py" bench/gen_generic.py "$n" > bench/out/generic.jsonl
echo "events: $n, distinct texts: $(sort -u bench/out/generic.jsonl | wc -l)" >&2
if ! "$py" -c "import consumer_native" 2>/dev/null; then
  echo "consumer_native is not installed (pip install ./native): both runs are pure Python" >&2
fi

run() {  # run NAME OUTPUT [classify options...]
  local name=$1 output=$2
  shift 2
  local start end
  start=$(date +%s.%N)
  taskset -c 0 "$py" -m consumer classify bench/out/generic.jsonl "$@" > "$output"
  end=$(date +%s.%N)
  python3 - "$n" "$start" "$end" "$name" <<'PY'
import sys
n, start, end, name = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"classify ({name}): {n} events in {end - start:.2f} s = {n / (end - start):,.0f} events/s (one core)")
PY
}

if [[ $paths == both || $paths == native ]]; then
  run native bench/out/events.jsonl
fi
if [[ $paths == both || $paths == python ]]; then
  run python bench/out/events-python.jsonl --no-native
fi
if [[ $paths == both ]]; then
  cmp -s bench/out/events.jsonl bench/out/events-python.jsonl \
    && echo "outputs identical ($(wc -l < bench/out/events.jsonl) events)" \
    || { echo "OUTPUTS DIFFER: bench/out/events.jsonl bench/out/events-python.jsonl" >&2; exit 1; }
fi
