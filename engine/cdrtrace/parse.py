"""Parsers by format name: the native core, or the reference when CDRTRACE_PURE=1."""
from __future__ import annotations

import os

from . import timezones
from .errors import CdrTraceError, NativeModuleError
from .formats import FORMATS

try:
    from . import _parse as _native
except ImportError as exc:  # never fall back silently
    _native = None
    _native_error = exc


class FormatError(CdrTraceError, ValueError):
    """An unknown CDR format name."""


def use_reference() -> bool:
    return os.environ.get("CDRTRACE_PURE") == "1"


def native():
    """The compiled parser module; raise a clear error if it did not import."""
    if _native is None:
        raise NativeModuleError(
            f"cdrtrace's native parser did not import ({_native_error}); reinstall with "
            "`pip install .` so the extensions are built (CDRTRACE_PURE=1 selects the slow "
            "reference parser for debugging)")
    return _native


def make_parser(fmt: str = "asterisk", zone: str = "UTC", country_code: int = 1,
                feed_id: int = 0, min_ring_seconds: float = 0.0):
    """A streaming parser: feed(buffer, final) -> (columns, rejects, consumed)."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if use_reference():
        from ._parse_py import AsteriskParser as Reference

        return Reference(zone, country_code, feed_id, min_ring_seconds)
    starts, offsets = timezones.zone_table(zone)
    return native().AsteriskParser(starts, offsets, country_code, feed_id, min_ring_seconds)


def normalize_number(text, country_code: int = 1) -> int:
    if use_reference():
        from .numbers import normalize

        return normalize(text, country_code)
    return native().normalize_number(text, country_code)
