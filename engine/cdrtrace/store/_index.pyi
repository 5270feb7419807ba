"""Native kernels of the last-call index (ext/_index.pyx)."""
import numpy as np

DEF_KEEP: int
ENTRY_BYTES: int
ENTRY_FIELDS: tuple[tuple[str, str], ...]

def line_key(packed: int) -> bytes: ...
def line_keys(lines: np.ndarray) -> list[bytes]: ...
def merge(lines: np.ndarray, entries: np.ndarray, keys: list[bytes] | None,
          stored: list[tuple[bytes, bytes]] | None, keep: int = ...) -> list[tuple[bytes, bytes]]: ...
