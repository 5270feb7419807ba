"""A trace's evidence record in C, the common case (ext/_trace.pyx)."""
from typing import Any

TWIN_US: int

def record(etxn: Any, itxn: Any, dbs: tuple[Any, ...], key: bytes, packed: int, at_us: int,
           line: str, requested_by: str | None, keep: int,
           helpers: tuple[Any, ...], current: bool = False) -> dict[str, Any] | None: ...
