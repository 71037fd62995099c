"""meshObjects: who exists and who may do what (users, user groups, workspaces, projects,
project bindings, tenants), as typed models.

The models are pydantic dataclasses with slots, frozen: an inventory holds millions of them, and
a binding so made takes about 270 bytes where a ``BaseModel`` took about 2,000 (no ``__dict__``,
no set of the fields given). They validate as the config's models do (camelCase keys, unknown
keys are errors) and keep the two methods the rest of the code calls, ``model_validate`` and
``model_dump``."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic.dataclasses import dataclass

from platforms.contract import OPTIONS_CONFIG

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$"

# Lengths every source's values are held to before anything is written (the state store's
# columns are a second line: a key of three names fits its 600 characters, an euid the lookup
# cache's and the audit subject's 1024).
MAX_NAME = 200
"""Object names and the workspace and project identifiers objects name."""
MAX_TEXT = 256
"""User names, display names, given and family names."""
MAX_EMAIL = 320
"""An email address (64 for the local part, @, 255 for the domain)."""
MAX_EUID = 1024
"""An external user id."""

Name = Annotated[str, Field(max_length=MAX_NAME), AfterValidator(sys.intern)]
"""An identifier objects name: interned, since a large inventory repeats each many times (a
project's in each of its bindings, a user's in each binding and group naming them) and the parser
makes a new string of each."""
Ref = Annotated[str, AfterValidator(sys.intern)]
"""A reference to an object, interned as :data:`Name` is (its length is checked where it is
defined)."""
Text = Annotated[str, Field(max_length=MAX_TEXT)]


def normal(text: str) -> str:
    """An identity attribute (user name, email, euid) as it is kept and sent on: Unicode NFC (one
    form for "é" composed and decomposed), outer white space removed."""
    return unicodedata.normalize("NFC", text).strip()


def fold(text: str) -> str:
    """An identity attribute as it is compared for uniqueness (user names, euids): Unicode NFKC
    (fullwidth letters, ligatures, composed and decomposed accents are one), case-folded, outer
    white space removed. "José" (composed or decomposed), "JOSÉ " and "Ｊｏｓé" are one name."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).strip()


_C = TypeVar("_C", bound=type)
_CONFIG = ConfigDict(**{k: v for k, v in OPTIONS_CONFIG.items() if k != "frozen"})  # type: ignore[typeddict-item]


def _model(cls: _C) -> _C:
    """A meshObject model: a frozen pydantic dataclass with slots, keyword arguments only, read as
    the config's models are (camelCase keys, unknown keys are errors)."""
    made = dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
    return made(cls)  # type: ignore[return-value]


class Obj:
    """Base of every meshObject model: the two methods of a pydantic model the code calls."""

    __slots__ = ()

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """The object from its document (a mapping); ValidationError for every problem."""
        return cls.__pydantic_validator__.validate_python(data)  # type: ignore[attr-defined,no-any-return]

    def model_dump(self, **options: Any) -> dict[str, Any]:
        """The object as a dict (``mode``, ``by_alias``, ``exclude_defaults``, ... as pydantic's)."""
        return self.__pydantic_serializer__.to_python(self, **options)  # type: ignore[attr-defined,no-any-return]


@_model
class Envelope(Obj):
    """What every meshObject has before its ``kind``, ``metadata`` and ``spec``."""

    api_version: Literal["v1"] = "v1"


@_model
class Named(Obj):
    name: str = Field(pattern=_NAME, max_length=MAX_NAME)
    """Stable, immutable identifier of the object."""


@_model
class InWorkspace(Named):
    owned_by_workspace: Name
    """Identifier of the workspace the object belongs to."""


@_model
class InProject(Obj):
    owned_by_workspace: Name
    owned_by_project: Name
    name: Name | None = None
    """Optional name of the object (shown in messages)."""


@_model
class UserSpec(Obj):
    """A person's names. ``username``, ``email`` and ``euid`` are kept in Unicode NFC with outer
    white space removed (:func:`normal`); euids are unique as :func:`fold` compares them."""

    username: Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(normal)] | None = None
    email: Annotated[str, Field(max_length=MAX_EMAIL), AfterValidator(normal)] | None = None
    euid: Annotated[str, Field(max_length=MAX_EUID), AfterValidator(normal)] | None = None
    """External user id: the user's identity on platforms with externally-provisioned users.
    Without it the user cannot be replicated there (warning USER_HAS_NO_EUID)."""
    given_name: Text | None = None
    family_name: Text | None = None


@_model
class MeshUser(Envelope):
    """A person (stable id = the OIDC subject)."""

    kind: Literal["meshUser"]
    metadata: Named
    spec: UserSpec = UserSpec()


@_model
class UserGroupSpec(Obj):
    members: tuple[Name, ...] = ()
    """meshUser names."""
    display_name: Text | None = None


@_model
class MeshUserGroup(Envelope):
    """A set of users bound together."""

    kind: Literal["meshUserGroup"]
    metadata: Named
    spec: UserGroupSpec = UserGroupSpec()


@_model
class Tagged(Obj):
    """A spec with ``tags``: text values (YAML turns ``costCenter: 4711`` into a number, tags are
    text); ``#{tagCostCenter}`` in a group name pattern reads tag ``costCenter``."""

    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tags_as_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tags"), dict):
            data = dict(data)
            data["tags"] = {
                k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v)
                for k, v in data["tags"].items()
            }
        return data


@_model
class WorkspaceSpec(Tagged):
    display_name: Text | None = None


@_model
class MeshWorkspace(Envelope):
    kind: Literal["meshWorkspace"]
    metadata: Named
    spec: WorkspaceSpec = WorkspaceSpec()


@_model
class ProjectSpec(Tagged):
    display_name: Text | None = None


@_model
class MeshProject(Envelope):
    kind: Literal["meshProject"]
    metadata: InWorkspace
    spec: ProjectSpec = ProjectSpec()


@_model
class UserSubject(Obj):
    user: Ref


@_model
class GroupSubject(Obj):
    group: Ref


def _subject_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        return "user" if "user" in v else "group" if "group" in v else None
    return "user" if isinstance(v, UserSubject) else "group" if isinstance(v, GroupSubject) else None


Subject = Annotated[
    Annotated[UserSubject, Tag("user")] | Annotated[GroupSubject, Tag("group")],
    Discriminator(
        _subject_kind,
        custom_error_type="subject",
        custom_error_message="a subject is {user: NAME} or {group: NAME}",
    ),
]


@_model
class BindingSpec(Obj):
    role: Ref
    """A meshProject role that landing zones map (admin, user, reader, ...)."""
    subjects: tuple[Subject, ...]
    expires_at: AwareDatetime | None = None
    """Optional: the access ends by itself at the first run after this time."""


@_model
class MeshProjectBinding(Envelope):
    """Gives users and user groups a role on a project."""

    kind: Literal["meshProjectBinding"]
    metadata: InProject
    spec: BindingSpec


@_model
class TenantMeta(Obj):
    owned_by_workspace: Ref
    owned_by_project: Ref
    platform_identifier: Ref


@_model
class TenantSpec(Tagged):
    local_id: str
    """The platform's id of the tenant: AWS account id, subscription id, project id, namespace."""
    landing_zone_identifier: Ref
    deleted: bool = False
    """True: revoke all access, then delete the owned groups; the record is kept as Deleted."""

    @model_validator(mode="before")
    @classmethod
    def _local_id_as_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("localId"), int):
            data = dict(data)
            data["localId"] = str(data["localId"])
        return data


@_model
class MeshTenant(Envelope):
    """A project's presence on one platform."""

    kind: Literal["meshTenant"]
    metadata: TenantMeta
    spec: TenantSpec

    @property
    def key(self) -> str:
        m = self.metadata
        return f"{m.owned_by_workspace}/{m.owned_by_project}/{m.platform_identifier}"


MeshObject = Annotated[
    MeshUser | MeshUserGroup | MeshWorkspace | MeshProject | MeshProjectBinding | MeshTenant,
    Field(discriminator="kind"),
]
KINDS = ("meshUser", "meshUserGroup", "meshWorkspace", "meshProject", "meshProjectBinding", "meshTenant")


class Inventory(BaseModel):
    """Every meshObject, by kind. Built by the loader; plain data for the pure core."""

    model_config = ConfigDict(frozen=True)

    users: dict[str, MeshUser] = Field(default_factory=dict)
    groups: dict[str, MeshUserGroup] = Field(default_factory=dict)
    workspaces: dict[str, MeshWorkspace] = Field(default_factory=dict)
    projects: dict[tuple[str, str], MeshProject] = Field(default_factory=dict)
    bindings: tuple[MeshProjectBinding, ...] = ()
    tenants: dict[str, MeshTenant] = Field(default_factory=dict)

    @cached_property
    def bindings_by_project(self) -> dict[tuple[str, str], tuple[MeshProjectBinding, ...]]:
        """Bindings by (workspace, project), in inventory order."""
        index: dict[tuple[str, str], list[MeshProjectBinding]] = {}
        for b in self.bindings:
            index.setdefault((b.metadata.owned_by_workspace, b.metadata.owned_by_project), []).append(b)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def tenants_by_project(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """(workspace, project) -> the keys of its tenants."""
        index: dict[tuple[str, str], list[str]] = {}
        for key, t in self.tenants.items():
            index.setdefault((t.metadata.owned_by_workspace, t.metadata.owned_by_project), []).append(key)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def projects_by_subject(self) -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
        """(``user`` or ``group``, name) -> the (workspace, project) of each binding naming it."""
        index: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for project, bindings in self.bindings_by_project.items():
            for b in bindings:
                for s in b.spec.subjects:
                    subject = ("user", s.user) if isinstance(s, UserSubject) else ("group", s.group)
                    index.setdefault(subject, set()).add(project)
        return {k: frozenset(v) for k, v in index.items()}

    @cached_property
    def groups_by_member(self) -> dict[str, tuple[str, ...]]:
        """meshUser name -> the user groups that have it as a member."""
        index: dict[str, list[str]] = {}
        for name, g in self.groups.items():
            for member in g.spec.members:
                index.setdefault(member, []).append(name)
        return {k: tuple(v) for k, v in index.items()}

    @property
    def empty(self) -> bool:
        return not (self.users or self.bindings or self.tenants)

    def build_indexes(self) -> None:
        """Build every index now (each is otherwise built by its first use)."""
        for name in _INDEXES:
            getattr(self, name)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Inventory:
        """A copy with ``update``; the indexes above are built again for it, not copied (pydantic
        copies what a ``cached_property`` keeps, which would describe the original)."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _INDEXES:
            copy.__dict__.pop(name, None)
        return copy


_INDEXES = tuple(name for name, value in vars(Inventory).items() if isinstance(value, cached_property))


def binding_label(b: MeshProjectBinding, index: int | None = None) -> str:
    m = b.metadata
    name = m.name or (f"#{index}" if index is not None else "")
    return f"meshProjectBinding {m.owned_by_workspace}/{m.owned_by_project} {name} ({b.spec.role})".replace(
        "  ", " "
    )


def object_key(obj: Any) -> str | None:
    """The identity of a meshObject within its kind, as the state store and the object API use it:
    ``name`` (users, user groups, workspaces), ``workspace/name`` (projects),
    ``workspace/project/name`` (bindings; None for a binding without a name, which only files may
    hold), ``workspace/project/platform`` (tenants)."""
    m = obj.metadata
    if isinstance(obj, MeshUser | MeshUserGroup | MeshWorkspace):
        return str(m.name)
    if isinstance(obj, MeshProject):
        return f"{m.owned_by_workspace}/{m.name}"
    if isinstance(obj, MeshProjectBinding):
        return f"{m.owned_by_workspace}/{m.owned_by_project}/{m.name}" if m.name else None
    if isinstance(obj, MeshTenant):
        return obj.key
    raise TypeError(f"not a meshObject: {type(obj).__name__}")


def object_document(obj: Any) -> dict[str, Any]:
    """The object as in an inventory file (camelCase keys, defaults left out)."""
    doc = obj.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {"apiVersion": obj.api_version, "kind": obj.kind, **doc}
