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

import dataclasses
import functools
import unicodedata

from ..errors import NumberError

NONE, E164, EXTENSION, OTHER = 0, 1, 2, 3
IDENTITY = 4                 # unpack's kind for a caller identity (packed as OTHER, length 63)
IDENTITY_LENGTH = 63
MAX_IDENTITY = 128           # bytes of an identity's text
# values that mean no identity was delivered (docs/trace-rules.md, "Who called"), compared case-insensitively
ANONYMOUS = frozenset({"anonymous", "restricted", "private", "unavailable", "out of area",
                       "unknown", "default", "<>", "unknown caller", "withheld"})
_IDENTITY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-+@")
MAX_DIGITS = 15
MAX_EXTENSION_DIGITS = 7
MIN_E164_DIGITS = 7
_FORMATTING = " -().\t/"        # '/': '030/1234567', as German numbers are written


def pack(kind: int, digits: str) -> int:
    """Pack a kind and its digit string into the uint64 form."""
    return (kind << 62) | (len(digits) << 56) | int(digits)


def unpack(packed: int) -> tuple[int, str]:
    """Return (kind, digits) for a packed number; (NONE, "") for zero; (IDENTITY, its
    hash in hex) for a caller identity."""
    if packed == 0:
        return NONE, ""
    kind = packed >> 62
    length = (packed >> 56) & 0x3F
    if kind == OTHER and length == IDENTITY_LENGTH:
        return IDENTITY, f"{packed & ((1 << 56) - 1):014x}"
    return kind, str(packed & ((1 << 56) - 1)).zfill(length)


def format_number(packed: int) -> str:
    """The written form: "+13035550110" for E.164, the bare digits otherwise, "id:<hash>"
    for a caller identity (its text is kept in the store's identities)."""
    kind, digits = unpack(packed)
    return "+" + digits if kind == E164 else "id:" + digits if kind == IDENTITY else digits


def identity_text(text: str | bytes) -> str | None:
    """A caller identity that is not a number, as compared: a SIP user or URI user
    ('client1', 'alice@pbx.example', 'sip:alice@pbx.example'), lowercased, without its
    scheme. None for an anonymity marker, an empty value, or anything else."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    s = text.strip(" \t").lower()
    if s.startswith("sips:"):
        s = s[5:]
    elif s.startswith("sip:"):
        s = s[4:]
    if (not s or s in ANONYMOUS or len(s) > MAX_IDENTITY or not set(s) <= _IDENTITY_CHARS
            or not any("a" <= c <= "z" for c in s)):
        return None
    return s


def pack_identity(text: str) -> int:
    """An identity's packed form: kind OTHER with the length no number has (63), and a
    56-bit hash of its text (the native parser's FNV-1a + splitmix64)."""
    h = 14695981039346656037
    for byte in text.encode("latin-1"):
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 31
    return (OTHER << 62) | (IDENTITY_LENGTH << 56) | (h & ((1 << 56) - 1))


def caller(text: str | bytes, country_code: int = 1) -> int:
    """A calling party: its number, else its identity; 0 when none was delivered."""
    packed = normalize(text, country_code)
    if packed == 0:
        identity = identity_text(text)
        if identity is not None:
            packed = pack_identity(identity)
    return packed


@dataclasses.dataclass(frozen=True)
class DiallingPlan:
    """How a country's subscribers write numbers: its calling code, national trunk
    prefix ('' where numbers keep their leading 0, as in Italy), international prefixes,
    and the lengths of a national significant number."""

    country_code: int
    trunk: str
    international: tuple[str, ...]
    lengths: frozenset[int]
    # the calling codes whose trunk prefix is 0 (bracketed_trunk_codes): '+44 (0)20 ...'
    zero_trunk: frozenset[int] = frozenset()
    # those whose numbers never begin with 0 (bare_trunk_codes): '+44 020 ...'
    bare_zero: frozenset[int] = frozenset()

    def as_tuple(self) -> tuple:
        """The form the native parser takes."""
        return (self.country_code, self.trunk, self.international, tuple(sorted(self.lengths)),
                tuple(sorted(self.zero_trunk)), tuple(sorted(self.bare_zero)))


MAX_PREFIXES, MAX_PREFIX_DIGITS = 16, 7


def _expand(node) -> list[str] | None:
    """The digit strings a small regular expression (libphonenumber's prefix patterns)
    matches, or None when there are too many or it is not that kind of pattern."""
    import re._constants as c  # type: ignore[import-not-found]  # the regex parser's own tables

    out = [""]
    for op, av in node:
        if op is c.LITERAL:
            options = [chr(av)]
        elif op is c.IN:
            options = []
            for kind, value in av:
                if kind is c.LITERAL:
                    options.append(chr(value))
                elif kind is c.RANGE:
                    options += [chr(x) for x in range(value[0], value[1] + 1)]
                elif kind is c.CATEGORY and value is c.CATEGORY_DIGIT:
                    options += list("0123456789")
                else:
                    return None
        elif op is c.SUBPATTERN:
            inner = _expand(av[-1])
            if inner is None:
                return None
            options = inner
        elif op is c.BRANCH:
            options = []
            for branch in av[1]:
                expanded = _expand(branch)
                if expanded is None:
                    return None
                options += expanded
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] == av[1]:
            inner = _expand(av[2])
            if inner is None:
                return None
            options = [""]
            for _ in range(av[0]):
                options = [a + b for a in options for b in inner]
        else:
            return None
        out = [a + b for a in out for b in options]
        if len(out) > MAX_PREFIXES:
            return None
    return out


def _prefixes(pattern: str | None, preferred: str | None) -> tuple[str, ...]:
    """International prefixes as digit strings: each alternative of the pattern that
    expands to a few, and the preferred one ('8~10': dial 8, wait for tone, dial 10)."""
    import re._parser as sre  # type: ignore[import-not-found]

    found = []
    if pattern:
        tree = sre.parse(pattern)
        branches = ([list(b) for b in tree[0][1][1]] if len(tree) == 1 and tree[0][0] is sre.BRANCH
                    else [list(tree)])
        for branch in branches:
            expanded = _expand(branch)
            if expanded:
                found += expanded
    if preferred:
        found.append(preferred.replace("~", ""))
    ok = sorted({p for p in found if p.isdigit() and len(p) <= MAX_PREFIX_DIGITS},
                key=lambda p: (-len(p), p))
    return tuple(ok[:MAX_PREFIXES])


@functools.cache
def bracketed_trunk_codes() -> frozenset[int]:
    """The calling codes whose countries' national trunk prefix is 0 (libphonenumber's
    metadata, each code's main country): a '(0)' written after one ('+44 (0)20 7946
    0018', '0049 (0)30 ...', as numbers are written for callers at home and abroad alike)
    is that prefix, dialled at home only. Not Italy's: its numbers keep their 0."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    codes = set()
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        meta = PhoneMetadata.metadata_for_region(regions[0]) if regions else None
        if meta is not None and meta.national_prefix == "0" and code < 1000:
            codes.add(int(code))
    return frozenset(codes)


def _first_digits(node) -> tuple[set[str], bool]:
    """The characters a parsed regular expression (libphonenumber's number patterns) may
    begin with, and whether it may match nothing."""
    import re._constants as c  # the regex parser's own tables

    found: set[str] = set()
    for op, av in node:
        if op is c.LITERAL:
            first, empty = {chr(av)}, False
        elif op is c.IN or (op is c.CATEGORY and av is c.CATEGORY_DIGIT):
            first, empty = set("0123456789"), False
            if op is c.IN and all(kind is c.LITERAL or kind is c.RANGE for kind, _ in av):
                first = {chr(x) for kind, v in av
                         for x in ((v,) if kind is c.LITERAL else range(v[0], v[1] + 1))}
        elif op is c.SUBPATTERN:
            first, empty = _first_digits(av[-1])
        elif op is c.BRANCH:
            branches = [_first_digits(b) for b in av[1]]
            first, empty = set().union(*(f for f, _ in branches)), any(e for _, e in branches)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            first, empty = _first_digits(av[2])
            empty = empty or av[0] == 0
        else:
            return set("0123456789"), True          # not understood: anything
        found |= first
        if not empty:
            return found, False
    return found, True


@functools.cache
def bare_trunk_codes() -> frozenset[int]:
    """The calling codes of bracketed_trunk_codes whose countries' numbers never begin
    with 0 (by each of the code's countries' number pattern, libphonenumber's metadata): a
    0 written right after one ('+44 020 7946 0018', as a PBX that puts +44 before a
    national number writes it) is the trunk prefix. Not Japan's or Korea's, whose
    patterns admit a leading 0."""
    import re._parser as sre

    import phonenumbers
    from phonenumbers import PhoneMetadata

    codes = set()
    for code in bracketed_trunk_codes():
        found = [PhoneMetadata.metadata_for_region(region)
                 for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())]
        metas = [m for m in found if m is not None]
        if metas and all(m.national_prefix == "0" and m.general_desc is not None
                         and not {"0", ""} & _first_zero(sre.parse(
                             m.general_desc.national_number_pattern)) for m in metas):
            codes.add(code)
    return frozenset(codes)


def _first_zero(tree) -> set[str]:
    """Of a pattern's first characters, '0' if it may begin with one, '' if it may be
    empty."""
    first, empty = _first_digits(list(tree))
    return (first & {"0"}) | ({""} if empty else set())


@functools.cache
def dialling_plan(country_code: int = 1) -> DiallingPlan:
    """The country's plan from libphonenumber's metadata (the phonenumbers package),
    read once per country: trunk prefix 1 in NANP, 8 in Russia, none in Italy, ..."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    region = phonenumbers.region_code_for_country_code(int(country_code))
    meta = PhoneMetadata.metadata_for_region(region) if region != "ZZ" else None
    if meta is None:
        raise NumberError(f"no country has the calling code {country_code}")
    return DiallingPlan(int(country_code), meta.national_prefix or "",
                        _prefixes(meta.international_prefix, meta.preferred_international_prefix),
                        frozenset(meta.general_desc.possible_length or ())
                        if meta.general_desc is not None else frozenset(),
                        bracketed_trunk_codes(), bare_trunk_codes())


# what a number pasted from a document or a web page holds beside ASCII: dashes and a
# minus sign as '-', zero-width spaces dropped (NFKC turns fullwidth digits and a
# no-break space into ASCII ones)
_TYPED = {**dict.fromkeys([*range(0x2010, 0x2016), 0x2212, 0x30FC, 0xFE58, 0xFE63], "-"),
          **dict.fromkeys((0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD))}


def typed(text: str) -> str:
    """A number as a person typed or pasted it (a line to trace, a directory's row), in
    the ASCII it is normalised from: '303\u2013555\u20130110', fullwidth digits and a
    no-break space read as written plainly. ASCII text is returned as it is."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_TYPED)


def uri_user(text: str) -> str:
    """A number written as a URI's user part, as SIP switches log one: without a tel:,
    sip: or sips: scheme, and cut at its first ';' (RFC 3966 parameters a carrier's
    number portability dip adds, 'npdi;rn=+1...', or 'cpc=ordinary') or '@' (the host)."""
    low = text[:5].lower()
    if low.startswith(("tel:", "sip:")):
        text = text[4:]
    elif low.startswith("sips:"):
        text = text[5:]
    for mark in (";", "@"):
        text = text.split(mark, 1)[0]
    return text


def normalize(text: str | bytes, country_code: int = 1) -> int:
    """Normalise a written number; 0 if it is not a number (the caller id is withheld).

    Rules (docs/trace-rules.md, "Who called"), by the country's dialling plan:
    formatting characters are ignored; ``+`` or an international prefix (011 in NANP,
    00, 810 in Russia, ...) gives E.164, a trunk prefix 0 written after its country code
    dropped ('+44 (0)20 ...', '+44 020 ...': bracketed_trunk_codes, bare_trunk_codes);
    1-7 digits are an extension; the national trunk prefix (1, 0, 8) followed by a
    national number of a possible length, or a national number of a possible length
    written without it (Italy keeps its leading 0), gets the country code; any other
    digit string up to 15 digits is kept as "other".
    """
    plan = dialling_plan(country_code)
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    s = uri_user(text.strip(" \t"))
    plus = s.startswith("+")
    if plus:
        s = s[1:]
    digits = "".join(c for c in s if c not in _FORMATTING)
    if not digits or not all("0" <= c <= "9" for c in digits) or len(digits) > 20:
        return 0
    # the digits before the first '(0)': a trunk prefix in brackets after the country code
    bracketed = s.find("(0)")
    bracketed = -1 if bracketed < 0 else sum("0" <= c <= "9" for c in s[:bracketed])
    cc = str(plan.country_code)
    prefix = next((p for p in plan.international if digits.startswith(p) and len(digits) > len(p)), None)
    lead = 0 if plus else None if prefix is None else len(prefix)
    if (lead is not None and 1 <= bracketed - lead <= 3
            and int(digits[lead:bracketed]) in plan.zero_trunk):
        # '+44 (0)20 7946 0018', '0049 (0)30 ...': written for callers at home and
        # abroad alike, the country's trunk prefix is dialled at home only
        digits = digits[:bracketed] + digits[bracketed + 1:]
    if lead is not None and digits[lead:lead + 1] not in ("", "0"):
        # '+44 020 7946 0018': the trunk prefix after a code whose numbers never begin
        # with 0 (calling codes are prefix-free: one length at most names one)
        for k in (1, 2, 3):
            if (digits[lead + k:lead + k + 1] == "0"
                    and int(digits[lead:lead + k]) in plan.bare_zero):
                digits = digits[:lead + k] + digits[lead + k + 1:]
                break
    if plus:
        kind, body = E164, digits
    elif prefix is not None:
        kind, body = E164, digits[len(prefix):]
    elif len(digits) <= MAX_EXTENSION_DIGITS:
        kind, body = EXTENSION, digits
    elif plan.trunk and digits.startswith(plan.trunk) and len(digits) - len(plan.trunk) in plan.lengths:
        kind, body = E164, cc + digits[len(plan.trunk):]
    elif len(digits) in plan.lengths:
        kind, body = E164, cc + digits
    else:
        kind, body = OTHER, digits
    if kind == E164 and not (MIN_E164_DIGITS <= len(body) <= MAX_DIGITS and body[0] != "0"):
        return 0
    if len(body) > MAX_DIGITS:
        return 0
    return pack(kind, body)
