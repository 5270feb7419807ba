"""Native Asterisk cdr_csv parser (ext/_parse.pyx)."""
import numpy as np
import numpy.typing as npt

REASONS: tuple[str, ...]

def normalize_number(text: str | bytes, country_code: int = ...) -> int: ...

class AsteriskParser:
    offset: int
    record: int
    country_code: int
    feed_id: int
    min_ring_us: int
    def __init__(self, tz_starts: npt.ArrayLike, tz_offsets: npt.ArrayLike,
                 country_code: int = ..., feed_id: int = ...,
                 min_ring_seconds: float = ...) -> None: ...
    def feed(self, buffer: bytes | bytearray | memoryview, final: bool = ...
             ) -> tuple[dict[str, np.ndarray], list[tuple[int, int, str, bytes]], int]: ...
