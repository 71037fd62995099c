"""One normalisation for identity attributes: kept in NFC without outer white space, compared
folded (NFKC, case-folded) where they must be unique."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.core.config import Config
from replicator.core.inventory import MeshUser, fold
from replicator.inputs.loader import InputError, Loaded, LoadedObject, Source
from replicator.inputs.validate import validate


def test_user_names_emails_and_euids_are_kept_in_nfc_without_outer_space() -> None:
    user = MeshUser.model_validate(
        {
            "kind": "meshUser",
            "metadata": {"name": "jose"},
            "spec": {"username": " Jose\u0301", "email": "jose\u0301@example.com\n", "euid": "\tJOSE\u0301 "},
        }
    )
    assert (user.spec.username, user.spec.email, user.spec.euid) == (
        "Jos\u00e9",
        "jos\u00e9@example.com",
        "JOS\u00c9",
    )


@pytest.mark.parametrize("twin", ["Jose\u0301", "JOS\u00c9 ", "\uff2a\uff4f\uff53\u00e9", "jos\u00e9"])
def test_one_name_in_other_unicode_forms_folds_to_one_key(twin: str) -> None:
    assert fold(twin) == fold("Jos\u00e9")
    assert fold("Josef") != fold("Jos\u00e9")


def test_two_users_whose_euids_fold_alike_are_refused() -> None:
    users = [
        MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": n}, "spec": {"euid": e}})
        for n, e in (("a", "alice@example.com"), ("b", "\uff21LICE@example.com"))
    ]
    loaded = Loaded(
        Path("replicator.yaml"),
        Config(),
        Source("replicator.yaml", None),
        [LoadedObject(u, Source("org.yaml", None), f"meshUser {u.metadata.name}") for u in users],
    )
    with pytest.raises(InputError, match="also the euid of meshUser a: euids must be unique"):
        validate(loaded)
