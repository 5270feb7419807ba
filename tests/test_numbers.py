"""Number normalisation (TRACE_RULES §3) and its lossless packing; native == reference."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdrtrace import _parse, numbers


@pytest.mark.parametrize("text,expected", [
    ("3035550110", "+13035550110"), ("13035550110", "+13035550110"),
    ("+1 (303) 555-0110", "+13035550110"), ("303.555.0110", "+13035550110"),
    ("011 44 20 7946 0018", "+442079460018"), ("+442079460018", "+442079460018"),
    ("1001", "1001"), ("0042", "0042"), ("5550110", "5550110"),
    ("0114420794", "+4420794"), ("0303555011", "+10303555011"), ("2035550110", "+12035550110"),
    ("anonymous", ""), ("Anonymous", ""), ("Restricted", ""), ("Private", ""),
    ("Unavailable", ""), ("OUT OF AREA", ""), ("unknown", ""), ("", ""), ("<>", ""),
    ("+12", ""), ("+0123456789", ""), ("1234567890123456", ""),
])
def test_nanp_normalisation(text, expected):
    assert numbers.format_number(numbers.normalize(text)) == expected
    assert _parse.normalize_number(text) == numbers.normalize(text)


@pytest.mark.parametrize("text,expected", [
    ("020 7946 0018", "+442079460018"), ("0044 20 7946 0018", "+442079460018"),
    ("+1 303 555 0110", "+13035550110"), ("2001", "2001"),
])
def test_other_country_codes(text, expected):
    assert numbers.format_number(numbers.normalize(text, 44)) == expected
    assert _parse.normalize_number(text, 44) == numbers.normalize(text, 44)


def test_kinds_never_collide():
    packed = {numbers.normalize(x) for x in ("1001", "01001", "001001", "+1001001")}
    assert len(packed) == 4 and 0 not in packed - {numbers.normalize("+1001001")}
    assert numbers.unpack(numbers.normalize("1001"))[0] == numbers.EXTENSION
    assert numbers.unpack(numbers.normalize("30355501"))[0] == numbers.OTHER


@given(st.sampled_from([numbers.E164, numbers.EXTENSION, numbers.OTHER]),
       st.text("0123456789", min_size=1, max_size=15))
def test_packing_is_lossless(kind, digits):
    packed = numbers.pack(kind, digits)
    assert numbers.unpack(packed) == (kind, digits)
    assert packed < 1 << 64


@given(st.text(alphabet="0123456789+-() .\t#*abc\n", max_size=24),
       st.sampled_from([1, 44, 33, 353, 61]))
def test_native_normalisation_equals_reference(text, cc):
    assert _parse.normalize_number(text, cc) == numbers.normalize(text, cc)


@given(st.integers(1000000000, 9999999999))
def test_normalised_numbers_round_trip(n):
    packed = numbers.normalize(str(n))
    if packed:
        assert numbers.normalize(numbers.format_number(packed)) == packed
