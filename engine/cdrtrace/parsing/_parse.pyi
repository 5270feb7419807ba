"""Native CDR parser (ext/_parse.pyx): one CSV dialect's records -> canonical columns."""
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

DIALECT_FIELDS: tuple[str, ...]
CALL_FIELDS: tuple[tuple[str, str], ...]
MAX_COLUMNS: int
DISPOSITION_CODES: dict[str, int]
LATE_REFUSAL_MICROSECONDS: int
PRESENTATION_CODES: dict[str, int]
HUNT_DTYPE: np.dtype

def normalize_number(text: str | bytes, country_code: int = ...,
                     plan: tuple[int, str, tuple[str, ...], tuple[int, ...]] | None = ...) -> int: ...

def structural_scan(kind: str | None = ...) -> str: ...
def format_utc(us: int, reference: Callable[[int], str]) -> str: ...
def block_masks(block: bytes, delim: int, quote: int) -> tuple[int, int, int]: ...

class Normalizer:
    def __init__(self, country_code: int = ...,
                 plan: tuple[int, str, tuple[str, ...], tuple[int, ...]] | None = ...) -> None: ...
    def __call__(self, text: str | bytes) -> int: ...

class CdrParser:
    offset: int
    record: int
    markers: int
    country_code: int
    feed_id: int
    min_ring_us: int
    expected_fields: str
    delimiter: int
    def __init__(self, dialect: dict[str, int], tz_starts: npt.ArrayLike, tz_offsets: npt.ArrayLike,
                 country_code: int = ..., feed_id: int = ..., min_ring_seconds: float = ...,
                 start_offset: int = ..., dispositions: dict[bytes, int] | None = ...,
                 presentations: dict[bytes, int] | None = ..., start_record: int = ...,
                 plan: tuple[int, str, tuple[str, ...], tuple[int, ...]] | None = ...) -> None: ...
    def feed(self, buffer: bytes | bytearray | memoryview, final: bool = ...
             ) -> tuple[dict[str, np.ndarray], list[tuple[int, int, int, int, bytes]], int]: ...
    def salvage(self, raw: bytes) -> tuple[int, int, int | None, int, tuple[int, ...]] | None: ...
    def take_activations(self) -> list[tuple[int, int, int, int]]: ...
    def take_identities(self) -> dict[int, str]: ...
    def take_hunts(self) -> np.ndarray: ...
    def take_hunt_members(self) -> np.ndarray: ...
