"""Secrets in driver blocks: never a literal, always ``{env: NAME}`` or ``{file: PATH}``."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic

from platforms.options import OPTIONS_CONFIG


class SecretRef(pydantic.BaseModel):
    """A secret named by an environment variable or a file, exactly one of the two."""

    model_config = OPTIONS_CONFIG

    env: str | None = None
    """Name of the environment variable holding the secret."""
    file: str | None = None
    """Path of a file holding the secret (trailing newline stripped)."""

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret is {env: NAME} or {file: PATH}, exactly one of the two")
        return self

    def resolve(self) -> str:
        """The secret's value; ValueError when it is unset, unreadable or empty."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
        else:
            assert self.file is not None
            try:
                value = Path(self.file).read_text().rstrip("\r\n")
            except OSError as e:
                raise ValueError(f"cannot read secret file {self.file}: {e.strerror or e}") from e
        if not value:
            raise ValueError(f"the secret in {self.env or self.file} is empty")
        return value
