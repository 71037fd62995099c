"""DN comparison as RFC 4514 says (``normalize_dn``): each of these spellings names one entry, as
a directory compares them; the real slapd's own spellings are in test_ldap_connector.py."""

from __future__ import annotations

import pytest

from replicator.sources.ldap.directory import normalize_dn

ALICE = "uid=alice,ou=people,dc=example,dc=org"


@pytest.mark.parametrize(
    "spelling",
    [
        "uid=alice, ou=people, dc=example, dc=org",  # a space after each comma, as people write it
        "uid = alice ,ou=people ,  dc=example,dc=org",  # spaces around = and before commas
        "UID=Alice,OU=People,DC=Example,DC=Org",  # case (caseIgnoreMatch attributes)
        "uid=\\61lice,ou=people,dc=example,dc=org",  # a hex escape of an ordinary character
        "  uid=alice,ou=people,dc=example,dc=org  ",
    ],
)
def test_spellings_of_one_dn_are_one_dn(spelling: str) -> None:
    assert normalize_dn(spelling) == normalize_dn(ALICE) == ALICE


def test_escaped_separators_and_multi_valued_rdns() -> None:
    assert normalize_dn("cn=Smith\\, John,ou=x") == normalize_dn("cn=smith\\2C  john, ou=x")
    assert normalize_dn("cn=Smith\\, John,ou=x") != normalize_dn("cn=Smith,cn=John,ou=x")
    assert normalize_dn("cn=a+uid=b,ou=x") == normalize_dn("uid=b + cn=a,ou=x")
    assert normalize_dn("cn=a+uid=b,ou=x") != normalize_dn("cn=a,uid=b,ou=x"), "one RDN is not two"
    assert normalize_dn("cn=J\\C3\\A9r\\C3\\B4me,ou=x") == normalize_dn("cn=Jérôme,ou=x")


def test_a_dn_ldap3_cannot_parse_is_only_trimmed_and_folded() -> None:
    assert normalize_dn(" Not A DN ") == "not a dn"
