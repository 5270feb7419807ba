"""The compiled parser (ext/_parse.pyx), imported once: a build without it fails here,
with what to do, never by falling back to the slow reference.

The native code raises no Python error of ours and imports no Python module of ours: a
rejected record comes back as a code and a detail, mapped to its message here
(errors.REJECT_REASONS, shared with the reference parser).
"""
from __future__ import annotations

from typing import Any

from ..errors import REJECT_REASONS, NativeModuleError

try:
    from . import _parse
except ImportError as exc:   # never fall back silently: say what to do
    raise NativeModuleError(
        f"cdrtrace's native parser did not import ({exc}); reinstall with `pip install .` "
        "so the extensions are built") from exc

Reject = tuple[int, int, str, bytes]     # record number, byte offset, reason, the raw bytes


def reject_message(code: int, detail: int, expected: str) -> str:
    return REJECT_REASONS[code].format(detail=detail, expected=expected)


class CdrParser(_parse.CdrParser):
    """The native parser; feed(buffer, final) -> (columns, rejects, bytes consumed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._made_with = (args, kwargs)

    def fresh(self) -> CdrParser:
        """A parser of the same dialect, zone, plan and feed that has read nothing."""
        args, kwargs = self._made_with
        return type(self)(*args, **kwargs)

    @property
    def reads_first_field(self) -> bool:
        """Whether any role of the dialect is its first column."""
        dialect = self._made_with[0][0] if self._made_with[0] else self._made_with[1]["dialect"]
        return any(v == 0 for k, v in dialect.items() if k.startswith("c_"))

    def rows_of(self, buffer: Any) -> dict:
        """The records of a whole buffer, as feed(buffer, final=True) reads them, without
        its rejects (parsing.glued tries many tails that are no records)."""
        return super().feed(buffer, True, False)[0]

    def feed(self, buffer: Any, final: bool = False  # type: ignore[override]  # words, not codes
             ) -> tuple[dict, list[Reject], int]:
        rows, coded, consumed = super().feed(buffer, final)
        if coded:
            expected = self.expected_fields
            return rows, [(record, offset, reject_message(code, detail, expected), raw)
                          for record, offset, code, detail, raw in coded], consumed
        return rows, [], consumed


normalize_number = _parse.normalize_number
Normalizer = _parse.Normalizer
