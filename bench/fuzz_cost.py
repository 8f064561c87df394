"""Cost per event of damaged real payloads: is the work per event bounded on hostile input?

Usage: python bench/fuzz_cost.py [N]  (default 20000 mutated payloads)

Reuses the mutation operations of tests/unit/test_fuzz_mutations.py with a seeded
random generator, times ``process`` on each mutated payload and prints the median,
p99, p99.9 and maximum, and the slowest payload's first bytes.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "unit"))

from test_fuzz_mutations import _PAYLOADS, _mutate, _paths

from consumer.errors import PayloadError
from consumer.pipeline import process
from consumer.rules import load_rules

_VALUES = [None, True, -1, 2**63, 1.5, "", "\x00", "550 5.1.1 " + "A" * 100_000, "a@b@c",
           [1, [2, [3]]], {"x": {"y": "z"}}, "9999-99-99T99:99:99Z"]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rules = load_rules()
    rng = random.Random(20261123)
    providers = sorted(_PAYLOADS)
    costs: list[tuple[float, bytes]] = []
    dead = 0
    for index in range(count):
        document = rng.choice(_PAYLOADS[rng.choice(providers)])
        for _ in range(rng.randint(1, 3)):
            paths = _paths(document)
            if paths:
                operation = rng.choice(["delete", "replace", "stringify", "wrap"])
                document = _mutate(document, rng.choice(paths), operation, rng.choice(_VALUES))
        raw = orjson.dumps(document)
        if rng.random() < 0.3:
            cut = rng.randint(0, len(raw))
            raw = raw[:cut] + rng.choice([b"\xff", b"\x00", b"]"]) + raw[cut + 1 :]
        start = time.perf_counter()
        try:
            process(raw, rules, "2025-01-01T00:00:00.000Z")
        except PayloadError:
            dead += 1
        costs.append((time.perf_counter() - start, raw))
        if index % 5000 == 4999:
            print(f"{index + 1:,}/{count:,} payloads", file=sys.stderr)
    costs.sort(key=lambda item: item[0])
    micro = [cost * 1e6 for cost, _ in costs]
    print(f"payloads: {count:,}, dead letters: {dead:,} ({dead / count:.1%})")
    median, p99 = micro[len(micro) // 2], micro[int(len(micro) * 0.99)]
    median, p99 = micro[len(micro) // 2], micro[int(len(micro) * 0.99)]
    print(f"per event: median {median:.0f} µs, p99 {p99:.0f} µs, "
          f"p99.9 {micro[int(len(micro) * 0.999)]:.0f} µs, max {micro[-1]:.0f} µs")
    print(f"slowest payload ({len(costs[-1][1]):,} bytes): {costs[-1][1][:120]!r}")


if __name__ == "__main__":
    main()
