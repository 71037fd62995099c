"""euid patterns (exactly one ``%s`` or ``%S``; ``%%`` a literal percent)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.euid import EuidPatternError, check_euid_pattern, transform_euid


@pytest.mark.parametrize(
    ("pattern", "euid", "expected"),
    [
        ("%s", "jdoe", "jdoe"),
        ("%S", "jdoe", "JDOE"),
        ("%s", "JDoe", "JDoe"),
        ("%S", "JDoe", "JDOE"),
        ("%s@example.com", "jdoe", "jdoe@example.com"),
        ("%S@example.com", "jdoe", "JDOE@example.com"),
        ("example.com/%S", "jdoe", "example.com/JDOE"),
        ("example.com/%s", "jdoe", "example.com/jdoe"),
        ("pre-%s-post", "x", "pre-x-post"),
    ],
)
def test_transform(pattern: str, euid: str, expected: str) -> None:
    check_euid_pattern(pattern)
    assert transform_euid(pattern, euid) == expected


def test_double_percent_is_a_literal_percent() -> None:
    assert transform_euid("100%%-%s", "jdoe") == "100%-jdoe"
    assert transform_euid("%s%%", "jdoe") == "jdoe%"
    assert transform_euid("%%%S%%", "a") == "%A%"


def test_double_percent_followed_by_s_is_not_a_slot() -> None:
    # "%%s" is a literal "%s": there is no slot left
    with pytest.raises(EuidPatternError, match="found 0"):
        check_euid_pattern("%%s")


def test_percent_in_the_euid_is_inserted_verbatim() -> None:
    assert transform_euid("%s", "50%s%%") == "50%s%%"
    assert transform_euid("%S", r"a\1b") == r"A\1B"


@pytest.mark.parametrize("pattern", ["", "jdoe", "example.com", "%%"])
def test_zero_slots_is_an_error(pattern: str) -> None:
    with pytest.raises(EuidPatternError, match="exactly one %s or %S, found 0"):
        check_euid_pattern(pattern)
    with pytest.raises(EuidPatternError):
        transform_euid(pattern, "jdoe")


@pytest.mark.parametrize("pattern", ["%s%s", "%s%S", "%S-%S", "%s@%s"])
def test_two_slots_is_an_error(pattern: str) -> None:
    with pytest.raises(EuidPatternError, match="found 2"):
        check_euid_pattern(pattern)
    with pytest.raises(EuidPatternError):
        transform_euid(pattern, "jdoe")


@pytest.mark.parametrize(
    ("pattern", "shown"), [("%d", "%d"), ("%s-%x", "%x"), ("%s% x", "% "), ("%s%i", "%i")]
)
def test_other_directives_are_errors(pattern: str, shown: str) -> None:
    with pytest.raises(EuidPatternError, match=f"{shown} is not allowed"):
        check_euid_pattern(pattern)


@pytest.mark.parametrize("pattern", ["%s%", "%", "%S@example.com%"])
def test_lone_trailing_percent_is_an_error(pattern: str) -> None:
    with pytest.raises(EuidPatternError, match="a lone % at the end"):
        check_euid_pattern(pattern)
    with pytest.raises(EuidPatternError):
        transform_euid(pattern, "jdoe")


def test_percent_before_newline_is_an_error() -> None:
    with pytest.raises(EuidPatternError, match="is not allowed"):
        check_euid_pattern("%s%\n")


def test_unicode_euid_as_is() -> None:
    assert transform_euid("%s@example.com", "jürgen.möller") == "jürgen.möller@example.com"
    assert transform_euid("%s", "山田") == "山田"


def test_unicode_upper_case_follows_python_str_upper() -> None:
    for euid in ("straße", "jürgen", "ǆ", "ﬁle", "\u0131", "Ωmega", "山田"):
        assert transform_euid("%S", euid) == euid.upper()
    assert transform_euid("%S", "straße") == "STRASSE"
    assert transform_euid("%S", "jürgen") == "JÜRGEN"
    assert transform_euid("u-%S", "ﬁ") == "u-FI"


def _reference_transform(pattern: str, euid: str) -> str:
    """The rule stated plainly, one directive at a time (the implementation splits once per pattern)."""
    check_euid_pattern(pattern)
    return re.sub(
        r"%(.)", lambda m: euid if m.group(1) == "s" else euid.upper() if m.group(1) == "S" else "%", pattern
    )


@given(
    before=st.lists(st.sampled_from(["a", "%%", "@", "é", "s", "S", "-"]), max_size=6).map("".join),
    slot=st.sampled_from(["%s", "%S"]),
    after=st.lists(st.sampled_from(["b", "%%", ".", "ß", "s", "%%s"]), max_size=6).map("".join),
    euid=st.text(max_size=12),
)
def test_transform_matches_the_rule_for_any_pattern(before: str, slot: str, after: str, euid: str) -> None:
    pattern = before + slot + after
    assert transform_euid(pattern, euid) == _reference_transform(pattern, euid)
