"""Write N generic MTA events (input format 8) whose texts are all distinct.

Texts come from the diagnostic corpus; every line gets its own recipient address,
queue id and remote IP spliced into the text, as in real traffic, so no two lines
repeat.  Usage: python bench/gen_generic.py N > events.jsonl
"""

from __future__ import annotations

import random
import sys
import tomllib
from pathlib import Path

import orjson

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "diagnostics"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    texts = []
    for path in sorted(CORPUS.glob("*.toml")):
        texts += [(c["action"], c["diagnostic"]) for c in tomllib.loads(path.read_text())["case"]]
    rng = random.Random(7)
    out = sys.stdout.buffer
    for index in range(count):
        action, text = texts[rng.randrange(len(texts))]
        user = f"user{index}.{rng.randrange(10**6)}@example{index % 97}.net"
        queue = f"{rng.getrandbits(48):012x}"
        event = {
            "finalRecipient": f"rfc822; {user}",
            "action": action,
            "diagnosticCode": f"{text} <{user}> id={queue} [198.51.100.{index % 250}]",
            "remoteMta": f"dns; mx{index % 13}.example{index % 97}.net",
            "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
            "reportingMta": "dns; mta-out-3.example.com",
            "messageId": f"<{queue}@example.com>",
        }
        out.write(orjson.dumps(event) + b"\n")


if __name__ == "__main__":
    main()
