"""Field descriptions in generated JSON schemas come from the docstring under each field, read
when a schema is generated (not when the class is built)."""

from __future__ import annotations

import pydantic

from platforms.options import OPTIONS_CONFIG, attribute_docs


class _Base(pydantic.BaseModel):
    model_config = OPTIONS_CONFIG

    region: str = "eu"
    """Where the base lives."""

    untold: int = 0


class _Child(_Base):
    region: str = "us"
    """Where the child lives."""

    max_attempts: int = 3
    """How often to try.

    Indented second paragraph."""

    explicit: str = pydantic.Field(default="x", description="Given in the Field.")
    """The docstring loses to an explicit description."""


def test_the_nearest_docstring_wins_and_bases_are_read() -> None:
    docs = attribute_docs(_Child)
    assert docs["region"] == "Where the child lives."
    assert docs["max_attempts"] == "How often to try.\n\nIndented second paragraph."
    assert "untold" not in docs
    assert attribute_docs(_Base) == {"region": "Where the base lives."}


def test_schema_properties_carry_the_docstrings_under_their_aliases() -> None:
    props = _Child.model_json_schema(by_alias=True)["properties"]
    assert props["region"]["description"] == "Where the child lives."
    assert props["maxAttempts"]["description"].startswith("How often to try.")
    assert props["explicit"]["description"] == "Given in the Field."
    assert "description" not in props["untold"]


def test_building_a_config_class_reads_no_source() -> None:
    """pydantic's own use_attribute_docstrings would parse the class source at import."""
    assert not OPTIONS_CONFIG.get("use_attribute_docstrings")
    assert _Child.model_fields["region"].description is None
