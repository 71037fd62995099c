"""Group name patterns (``#{name}`` and ``#{name:FORMAT}`` placeholders)."""

from __future__ import annotations

import pytest

from replicator.core.templating import (
    PLACEHOLDERS,
    PatternError,
    RenderError,
    Token,
    check_group_pattern,
    parse_pattern,
    render,
    tag_key,
)

VALUES = {
    "workspaceIdentifier": "finance",
    "projectIdentifier": "ledger",
    "platformGroupAlias": "admin",
    "platform": "aws.eu-central-1",
    "tenantLocalId": "123456789012",
}


# --- placeholders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("placeholder", "expected"),
    [
        ("workspaceIdentifier", "finance"),
        ("customerIdentifier", "finance"),
        ("projectIdentifier", "ledger"),
        ("platformGroupAlias", "admin"),
        ("platform", "aws.eu-central-1"),
        ("tenantLocalId", "123456789012"),
    ],
)
def test_every_plain_placeholder_renders_its_value(placeholder: str, expected: str) -> None:
    assert render(f"#{{{placeholder}}}", VALUES) == expected


def test_placeholders_constant_lists_every_plain_placeholder() -> None:
    assert set(PLACEHOLDERS) == {
        "workspaceIdentifier",
        "customerIdentifier",
        "projectIdentifier",
        "platformGroupAlias",
        "platform",
        "tenantLocalId",
    }


def test_customer_identifier_is_the_legacy_alias_of_workspace_identifier() -> None:
    values = dict(VALUES, customerIdentifier="something-else")
    # the alias always reads the workspace identifier, never a value of its own
    assert render("#{customerIdentifier}-#{workspaceIdentifier}", values) == "finance-finance"


def test_customer_identifier_without_workspace_value_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="customerIdentifier"):
        render("#{customerIdentifier}", {"platformGroupAlias": "admin"})


def test_default_pattern_renders_with_literal_text() -> None:
    pattern = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
    assert render(pattern, VALUES) == "finance.ledger-admin"


def test_literal_text_around_and_between_placeholders_is_kept() -> None:
    pattern = "pre_#{platform}::#{tenantLocalId}/#{platformGroupAlias}_post"
    assert render(pattern, VALUES) == "pre_aws.eu-central-1::123456789012/admin_post"


def test_pattern_without_placeholders_is_literal() -> None:
    assert render("just-text", VALUES) == "just-text"
    assert parse_pattern("just-text") == ["just-text"]


def test_parse_pattern_splits_literals_and_tokens() -> None:
    assert parse_pattern("a-#{platform}-#{tenantLocalId:%.3s}z") == [
        "a-",
        Token("platform", None, "#{platform}"),
        "-",
        Token("tenantLocalId", "%.3s", "#{tenantLocalId:%.3s}"),
        "z",
    ]


def test_missing_plain_value_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"#\{tenantLocalId\}: no value"):
        render("#{tenantLocalId}", {"platformGroupAlias": "admin"})


# --- tags -----------------------------------------------------------------------------------------


def test_tag_placeholder_reads_the_lower_camel_tag() -> None:
    tags = {"costCenter": "4711", "CostCenter": "wrong"}
    assert tag_key("tagCostCenter", tags) == "costCenter"
    assert render("#{tagCostCenter}-#{platformGroupAlias}", VALUES, tags) == "4711-admin"


def test_tag_placeholder_falls_back_to_case_insensitive_match() -> None:
    assert tag_key("tagCostCenter", {"COSTCENTER": "9"}) == "COSTCENTER"
    assert render("#{tagCostCenter}", VALUES, {"costcenter": "42"}) == "42"


def test_tag_placeholder_single_letter_name() -> None:
    assert render("#{tagX}", VALUES, {"x": "1"}) == "1"


def test_tag_key_returns_none_when_absent() -> None:
    assert tag_key("tagCostCenter", {"owner": "bob"}) is None


def test_missing_tag_is_a_render_error_naming_the_tag() -> None:
    with pytest.raises(RenderError, match="costCenter"):
        render("#{tagCostCenter}-#{platformGroupAlias}", VALUES, {"owner": "bob"})


def test_missing_tag_without_any_tags_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="costCenter"):
        render("#{tagCostCenter}", VALUES)


def test_tag_placeholder_with_format() -> None:
    assert render("#{tagCostCenter:%06d}", VALUES, {"costCenter": "4711"}) == "004711"
    assert render("#{tagOwner:%.3s}", VALUES, {"owner": "bobby"}) == "bob"


def test_bare_tag_is_an_unknown_placeholder() -> None:
    with pytest.raises(PatternError, match=r"unknown placeholder #\{tag\}"):
        parse_pattern("#{tag}")


# --- formats --------------------------------------------------------------------------------------


def test_format_truncates_strings() -> None:
    assert render("#{workspaceIdentifier:%.3s}-#{platformGroupAlias}", VALUES) == "fin-admin"
    assert render("#{platform:%.7s}", VALUES) == "aws.eu-"


def test_truncation_longer_than_value_keeps_value() -> None:
    assert render("#{platformGroupAlias:%.10s}", VALUES) == "admin"


def test_format_pads_strings_left_and_right() -> None:
    assert render("[#{platformGroupAlias:%-10s}]", VALUES) == "[admin     ]"
    assert render("[#{platformGroupAlias:%10s}]", VALUES) == "[     admin]"


def test_format_zero_pads_numbers() -> None:
    assert render("#{tenantLocalId:%03d}", {"tenantLocalId": "7"}) == "007"
    assert render("#{tenantLocalId:%03d}", {"tenantLocalId": "1234"}) == "1234"
    assert render("#{tenantLocalId:%d}", {"tenantLocalId": "42"}) == "42"


def test_format_number_drops_leading_zeros_of_the_value() -> None:
    assert render("#{tenantLocalId:%d}", {"tenantLocalId": "0042"}) == "42"


def test_format_hex_of_a_number() -> None:
    assert render("#{tenantLocalId:%x}", {"tenantLocalId": "255"}) == "ff"


@pytest.mark.parametrize("value", ["abc", "12ab", "1.5", ""])
def test_number_format_of_a_non_number_is_a_render_error(value: str) -> None:
    with pytest.raises(RenderError, match="is not a number"):
        render("#{tenantLocalId:%d}", {"tenantLocalId": value})


@pytest.mark.parametrize("fmt", ["%q", "%.7z", "abc", "%", "%%", "7s", "%*d", "%.s7"])
def test_invalid_format_is_a_pattern_error(fmt: str) -> None:
    with pytest.raises(PatternError, match="is not a format"):
        parse_pattern(f"#{{platformGroupAlias:{fmt}}}")


def test_invalid_format_is_a_pattern_error_also_from_render() -> None:
    with pytest.raises(PatternError):
        render("#{platformGroupAlias:%.7z}", VALUES)


@pytest.mark.parametrize("fmt", ["%s", "%.7s", "%-10s", "%10s", "%03d", "%d", "%i", "%o", "%x", "%X", "%+d"])
def test_valid_formats_parse(fmt: str) -> None:
    assert parse_pattern(f"#{{platformGroupAlias:{fmt}}}") == [
        Token("platformGroupAlias", fmt, f"#{{platformGroupAlias:{fmt}}}")
    ]


# --- pattern errors -------------------------------------------------------------------------------


def test_unknown_placeholder_is_a_pattern_error_naming_it() -> None:
    with pytest.raises(PatternError, match=r"unknown placeholder #\{projectName\}"):
        parse_pattern("#{projectName}-#{platformGroupAlias}")


def test_unknown_placeholder_from_render_is_a_pattern_error() -> None:
    with pytest.raises(PatternError, match="bogus"):
        render("#{bogus}", VALUES)


def test_empty_placeholder_is_a_pattern_error() -> None:
    with pytest.raises(PatternError, match="unknown placeholder"):
        parse_pattern("#{}-#{platformGroupAlias}")


def test_group_pattern_without_alias_is_rejected() -> None:
    with pytest.raises(PatternError, match="platformGroupAlias"):
        check_group_pattern("#{workspaceIdentifier}.#{projectIdentifier}")


def test_group_pattern_with_alias_only_in_literal_text_is_rejected() -> None:
    with pytest.raises(PatternError, match="must contain"):
        check_group_pattern("platformGroupAlias-#{workspaceIdentifier}")


def test_group_pattern_with_alias_is_accepted() -> None:
    check_group_pattern("#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}")
    check_group_pattern("#{platformGroupAlias:%.5s}")


def test_group_pattern_reports_parse_errors_first() -> None:
    with pytest.raises(PatternError, match="unknown placeholder"):
        check_group_pattern("#{nope}-#{platformGroupAlias}")


def test_unclosed_placeholder_at_the_end_is_a_pattern_error() -> None:
    with pytest.raises(PatternError, match="unclosed placeholder"):
        parse_pattern("#{workspaceIdentifier}-#{platformGroupAlias")


def test_lone_opening_at_the_end_is_a_pattern_error() -> None:
    with pytest.raises(PatternError, match="unclosed placeholder"):
        parse_pattern("#{platformGroupAlias}-#{")


def test_unclosed_placeholder_before_another_placeholder_is_a_pattern_error() -> None:
    # "#{workspaceIdentifier." never closes: the next "#{...}" must not hide it.
    with pytest.raises(PatternError, match="unclosed placeholder"):
        parse_pattern("#{workspaceIdentifier.#{platformGroupAlias}")


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(PatternError) as info:
        parse_pattern("#{foo}-#{platform:%q}-#{bar}-#{")
    message = str(info.value)
    assert "unknown placeholder #{foo}" in message
    assert "unknown placeholder #{bar}" in message
    assert "'%q' is not a format" in message
    assert "unclosed placeholder" in message
    assert message.count("; ") == 3


def test_hash_without_brace_and_lone_braces_are_literal() -> None:
    assert render("a#b}c{#{platformGroupAlias}", VALUES) == "a#b}c{admin"
