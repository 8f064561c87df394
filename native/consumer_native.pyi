"""Type information for the compiled fast path (see src/python.rs and consumer/fastpath.py)."""

from typing import Any

INTERFACE: int
ROLES: list[str]

class FastPath:
    def __init__(self, spec: dict[str, Any]) -> None: ...
    def process_lines(
        self, lines: list[bytes], received_at: str, max_bytes: int
    ) -> tuple[list[bytes | None], list[bytes | None], list[int]]: ...
    def process_chunk(
        self, lines: list[bytes], received_at: str, max_bytes: int
    ) -> tuple[bytes, bytes, list[int], list[int], list[int]]: ...
    def process_record(
        self,
        value: bytes,
        received_at: str,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
    ) -> tuple[Any, ...] | None: ...
    def engine_seconds(
        self, lines: list[bytes], received_at: str, max_bytes: int, repeat: int
    ) -> float: ...

def panics() -> int: ...
