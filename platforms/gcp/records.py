"""Cloud Identity groups and Admin SDK users as the driver keeps them: the few fields it reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from platforms.contract import PlatformUser


@dataclass(frozen=True)
class Group:
    id: str
    """The resource name, ``groups/<id>``."""
    email: str
    description: str

    @property
    def name(self) -> str:
        return self.email.partition("@")[0]


def group_record(item: Mapping[str, Any]) -> Group:
    key = item.get("groupKey") or {}
    return Group(str(item["name"]), str(key.get("id") or "").lower(), str(item.get("description") or ""))


def user_record(item: Mapping[str, Any]) -> PlatformUser:
    email = str(item["primaryEmail"])
    return PlatformUser(id=email.lower(), name=email)
