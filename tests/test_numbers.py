"""Number normalisation (docs/trace-rules.md, "Who called") and its lossless packing; native == reference."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cdrtrace
from cdrtrace.parsing import _parse, numbers


@pytest.mark.parametrize("text,expected", [
    ("3035550110", "+13035550110"), ("13035550110", "+13035550110"),
    ("+1 (303) 555-0110", "+13035550110"), ("303.555.0110", "+13035550110"),
    ("011 44 20 7946 0018", "+442079460018"), ("+442079460018", "+442079460018"),
    ("1001", "1001"), ("0042", "0042"), ("5550110", "5550110"),
    ("0114420794", "+4420794"), ("0303555011", "+10303555011"), ("2035550110", "+12035550110"),
    ("anonymous", ""), ("Anonymous", ""), ("Restricted", ""), ("Private", ""),
    ("Unavailable", ""), ("OUT OF AREA", ""), ("unknown", ""), ("", ""), ("<>", ""),
    ("+12", ""), ("+0123456789", ""), ("1234567890123456", ""),
    ("011", "011"),                    # the international prefix alone: an extension's digits
])
def test_nanp_normalisation(text, expected):
    assert numbers.format_number(numbers.normalize(text)) == expected
    assert _parse.normalize_number(text) == numbers.normalize(text)


@pytest.mark.parametrize("text,expected", [
    ("020 7946 0018", "+442079460018"), ("0044 20 7946 0018", "+442079460018"),
    ("+1 303 555 0110", "+13035550110"), ("2001", "2001"), ("00", "00"),
])
def test_other_country_codes(text, expected):
    assert numbers.format_number(numbers.normalize(text, 44)) == expected
    assert _parse.normalize_number(text, 44, numbers.dialling_plan(44).as_tuple()) == \
        numbers.normalize(text, 44)


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


@given(st.text(alphabet="0123456789+-() .\t#*abc\n/", max_size=24),
       st.sampled_from([1, 44, 33, 353, 61, 7, 39, 52, 81, 84]))
def test_native_normalisation_equals_reference(text, cc):
    plan = numbers.dialling_plan(cc).as_tuple()
    assert _parse.normalize_number(text, cc, plan) == numbers.normalize(text, cc)
    assert _parse.Normalizer(cc, plan)(text) == numbers.normalize(text, cc)   # the plan kept
    assert _parse.Normalizer(cc, plan)(text.encode()) == numbers.normalize(text, cc)


@given(st.integers(1000000000, 9999999999))
def test_normalised_numbers_round_trip(n):
    packed = numbers.normalize(str(n))
    if packed:
        assert numbers.normalize(numbers.format_number(packed)) == packed


def reads_as(text: str, cc: int, expected: str) -> None:
    """text, written in country cc, is the number expected, natively and by the reference."""
    assert numbers.format_number(numbers.normalize(text, cc)) == expected
    assert _parse.normalize_number(text, cc, numbers.dialling_plan(cc).as_tuple()) == \
        numbers.normalize(text, cc)


@pytest.mark.parametrize("text,cc,expected", [
    # Russia: trunk prefix 8, international prefix 810: one caller, one origin
    ("89245555937", 7, "+79245555937"), ("81079246516548", 7, "+79246516548"),
    ("+7 924 555-59-37", 7, "+79245555937"), ("9245555937", 7, "+79245555937"),
    # Italy has no trunk prefix: the 0 is part of the number
    ("0612345678", 39, "+390612345678"), ("06 1234 5678", 39, "+390612345678"),
    ("0039 06 1234 5678", 39, "+390612345678"), ("3331234567", 39, "+393331234567"),
    # Viet Nam, France, Mexico (no trunk prefix, international 00 or 09)
    ("0912345678", 84, "+84912345678"), ("01 42 68 53 00", 33, "+33142685300"),
    ("5512345678", 52, "+525512345678"), ("0044 20 7946 0018", 52, "+442079460018"),
    # lengths that are no national number of the country stay as they were written
    ("0123", 39, "0123"), ("012345678901234", 33, "012345678901234"),
])
def test_numbers_by_the_countrys_own_plan(text, cc, expected):
    reads_as(text, cc, expected)


@pytest.mark.parametrize("text,cc,expected", [
    # the trunk prefix written in brackets after the country code, as numbers are written
    # for callers at home and abroad alike: dialled at home only
    ("+44 (0)20 7946 0018", 44, "+442079460018"), ("+44(0)2079460018", 1, "+442079460018"),
    ("0049 (0)30 1234567", 49, "+49301234567"), ("011 44 (0) 20 7946 0018", 1, "+442079460018"),
    ("+33 (0)1 42 68 53 00", 33, "+33142685300"), ("+61 (0)2 9374 4000", 61, "+61293744000"),
    # not where the country's numbers keep their 0 (Italy), nor its trunk prefix is not 0
    ("+39 (0)6 1234 5678", 39, "+390612345678"), ("+7 (0)924 555 5937", 7, "+709245555937"),
    # nor without a country code before it, nor after more digits than a code has
    ("020 (0) 7946 0018", 44, "020079460018"), ("+4420 (0) 7946", 1, "+442007946"),
    ("+(0)44 20 7946 0018", 44, ""),
    # written without brackets, as a PBX that puts the code before a national number
    # writes it, where the code's numbers never begin with 0
    ("+44 020 7946 0018", 44, "+442079460018"), ("0044 020 7946 0018", 49, "+442079460018"),
    ("+49 (030) 1234567", 49, "+49301234567"), ("+44 (0)020 7946 0018", 1, "+442079460018"),
    ("+39 06 1234 5678", 39, "+390612345678"),        # Italy's numbers begin with 0
    ("+81 03 1234 5678", 81, "+810312345678"),        # Japan's may (its pattern admits it)
    ("030/1234567", 49, "+49301234567"), ("+49 30/1234567", 1, "+49301234567"),  # a slash
])
def test_a_trunk_prefix_in_brackets_after_the_country_code(text, cc, expected):
    reads_as(text, cc, expected)


@given(st.sampled_from(["+", "00", "011", "810", "", "+0"]), st.integers(1, 999),
       st.sampled_from(["(0)", " (0) ", "(0", "(00)", "((0)", "(0)(0)", "-(0)-", " 0", "0",
                        "00", " (0)0"]),
       st.text("0123456789 (0)", max_size=12), st.sampled_from([1, 44, 49, 39, 7, 33, 61]))
def test_a_written_trunk_zero_reads_alike_natively(lead, code, mark, rest, cc):
    text = f"{lead}{code}{mark}{rest}"
    plan = numbers.dialling_plan(cc).as_tuple()
    assert _parse.normalize_number(text, cc, plan) == numbers.normalize(text, cc)
    if cc == 1:
        assert _parse.normalize_number(text) == numbers.normalize(text)   # the default plan


def test_a_line_written_with_its_bracketed_trunk_prefix_is_traced(tmp_path):
    """A UK store: a call to 020 7946 0018 as the switch writes it; the care agent types
    the line as the customer gives it, '+44 (0)20 7946 0018'. Before, that was
    +4402079460018, a line with no call: 'not successful' for a call that rang."""
    from conftest import cdr, cdr_file

    store = cdrtrace.open(tmp_path / "uk", create=True, zone="Europe/London", country_code=44)
    cdrtrace.ingest(store, [cdr_file(tmp_path, cdr(src="01632960123", dst="02079460018",
                                                   clid='"" <01632960123>'))])
    result = store.trace("+44 (0)20 7946 0018", at="2026-03-02T15:00:00Z")
    assert result.outcome.value == "success"
    (record,) = store.trace_records("02079460018", analyst="cic")
    assert record["line"] == "+442079460018" and record["call"]["calling"] == "+441632960123"
    store.close()


def test_an_unknown_country_code_is_a_clear_error():
    with pytest.raises(cdrtrace.NumberError, match="no country has the calling code 999"):
        numbers.normalize("0612345678", 999)
    with pytest.raises(ValueError, match="needs its dialling plan"):
        _parse.normalize_number("0612345678", 39)


@given(st.sampled_from(["3035550110", "13035550110"]), st.integers(0, 10), st.integers(0, 255))
def test_a_dialled_number_with_any_byte_changed_reads_as_the_reference_reads_it(
        number, at, byte):
    """The native parser reads a 10- or 11-digit number's first 8 digits as one word:
    a byte that is not a digit anywhere in them (or after them) sends it the long way."""
    text = bytearray(number.encode())
    text[min(at, len(text) - 1)] = byte
    text = bytes(text)
    assert _parse.normalize_number(text) == numbers.normalize(text.decode("latin-1"))


CARRIER_COUNTRIES = ("US", "CA", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE",
                     "NO", "DK", "FI", "PL", "PT", "IE", "GR", "RU", "UA", "TR", "IN", "JP",
                     "KR", "CN", "AU", "NZ", "BR", "MX", "ZA", "NG", "IL", "SA", "AE", "SG")


@pytest.mark.parametrize("region", CARRIER_COUNTRIES)
def test_every_written_form_of_a_number_is_one_number(region):
    """One caller, one origin (R8): libphonenumber's example numbers of each country, written
    as its own subscribers write them (nationally, where a national number has more digits
    than an extension), internationally, as E.164 and tel: URIs, dialled from abroad (with
    that country's international prefix, read by a feed of that country), and with the
    trunk prefix in brackets after the code where it is 0 ('+44 (0)20 ...'): each reads as
    the number libphonenumber itself formats as E.164."""
    import phonenumbers as pn
    from phonenumbers import PhoneNumberFormat as F
    from phonenumbers import PhoneNumberType as T

    cc = pn.country_code_for_region(region)
    checked = 0
    for kind in (T.FIXED_LINE, T.MOBILE):
        number = pn.example_number_for_type(region, kind)
        e164 = pn.format_number(number, F.E164)
        forms = [(pn.format_number(number, f), cc) for f in (F.INTERNATIONAL, F.E164, F.RFC3966)]
        national = pn.national_significant_number(number)
        if len(national) > numbers.MAX_EXTENSION_DIGITS:
            forms.append((pn.format_number(number, F.NATIONAL), cc))
        for abroad in ("US", "GB", "DE", "RU", "JP", "BR"):
            written = pn.format_out_of_country_calling_number(number, abroad)
            if "~" not in written and abroad != region:    # '8~10': wait for a tone
                forms.append((written, pn.country_code_for_region(abroad)))
        if numbers.dialling_plan(cc).trunk == "0":
            forms.append((f"+{cc} (0){national}", 1))
        if cc in numbers.bare_trunk_codes():
            forms.append((f"+{cc} 0{national}", 1))
            assert pn.format_number(pn.parse(f"+{cc} 0{national}"), F.E164) == e164
        for text, feed_cc in forms:
            got = numbers.normalize(text, feed_cc)
            assert numbers.format_number(got) == e164, (text, feed_cc)
            plan = numbers.dialling_plan(feed_cc).as_tuple()
            assert _parse.normalize_number(text, feed_cc, plan) == got, (text, feed_cc)
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize("text", [
    "303\u2013555\u20130110", "303\u2012555\u20120110", "303\u2212555\u22120110",   # dashes, minus
    "303\u00a0555\u00a00110", "\u200b303 555 0110\u200b",                    # no-break, zero-width
    "\uff13\uff10\uff13\uff15\uff15\uff15\uff10\uff11\uff11\uff10",    # fullwidth digits
    "\uff0b\uff11 303 555 0110",                                               # fullwidth plus
])
def test_a_line_pasted_from_a_document_is_the_line(tmp_path, text):
    """A care agent pastes the customer's number from a letter or a web page: its dashes,
    spaces and digits may not be ASCII. The line is the one written plainly; a line that
    is no number is still refused."""
    store = cdrtrace.open(tmp_path / "s", create=True)
    assert store.line(text) == numbers.normalize("3035550110")
    with pytest.raises(cdrtrace.NumberError, match="not a telephone line"):
        store.line("303\u2013555\u2013O11O")                     # letters O, not zeros
    store.close()
