"""Telephone numbers: normalisation to E.164 and lossless packing into one uint64.

Packing (the index key and every number column)::

    bits 62-63  kind    0 none, 1 E.164, 2 extension, 3 other digits (unqualified)
    bits 56-61  length  digit count, 1..15 (keeps leading zeros)
    bits  0-55  value   the digits as an integer

Zero means "no number". E.164 numbers, extensions and unqualified digit strings never
collide because the kind is part of the key. This module is the reference; the native
parser implements the same rules and is tested against it.
"""
from __future__ import annotations

NONE, E164, EXTENSION, OTHER = 0, 1, 2, 3
MAX_DIGITS = 15
MAX_EXTENSION_DIGITS = 7
MIN_E164_DIGITS = 7
_FORMATTING = " -().\t"


def pack(kind: int, digits: str) -> int:
    """Pack a kind and its digit string into the uint64 form."""
    return (kind << 62) | (len(digits) << 56) | int(digits)


def unpack(packed: int) -> tuple[int, str]:
    """Return (kind, digits) for a packed number; (NONE, "") for zero."""
    if packed == 0:
        return NONE, ""
    kind = packed >> 62
    length = (packed >> 56) & 0x3F
    return kind, str(packed & ((1 << 56) - 1)).zfill(length)


def format_number(packed: int) -> str:
    """The written form: "+13035550110" for E.164, the bare digits otherwise."""
    kind, digits = unpack(packed)
    return "+" + digits if kind == E164 else digits


def normalize(text: str | bytes, country_code: int = 1) -> int:
    """Normalise a written number; 0 if it is not a number (the caller id is withheld).

    Rules (TRACE_RULES §3): formatting characters are ignored; ``+`` and the international
    prefix (011 in NANP, 00 elsewhere) give E.164; in NANP 10 digits, or 11 starting with
    1, are national; elsewhere a leading trunk 0 is replaced by the country code; 1-7
    digits are an extension; any other digit string up to 15 digits is kept as "other".
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    s = text.strip(" \t")
    plus = s.startswith("+")
    if plus:
        s = s[1:]
    digits = "".join(c for c in s if c not in _FORMATTING)
    if not digits or not all("0" <= c <= "9" for c in digits):
        return 0
    cc = str(country_code)
    if plus:
        kind, body = E164, digits
    elif country_code == 1 and digits.startswith("011") and len(digits) > 3:
        kind, body = E164, digits[3:]
    elif country_code != 1 and digits.startswith("00") and len(digits) > 2:
        kind, body = E164, digits[2:]
    elif len(digits) <= MAX_EXTENSION_DIGITS:
        kind, body = EXTENSION, digits
    elif country_code == 1 and len(digits) == 10:
        kind, body = E164, "1" + digits
    elif country_code == 1 and len(digits) == 11 and digits[0] == "1":
        kind, body = E164, digits
    elif country_code != 1 and digits[0] == "0" and len(digits) >= 8:
        kind, body = E164, cc + digits[1:]
    else:
        kind, body = OTHER, digits
    if kind == E164 and not (MIN_E164_DIGITS <= len(body) <= MAX_DIGITS and body[0] != "0"):
        return 0
    if len(body) > MAX_DIGITS:
        return 0
    return pack(kind, body)

