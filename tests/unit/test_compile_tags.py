"""``#{tag<Name>}`` reads the tags of the project, the tenant, its landing zone and its workspace,
the more specific first; a tag none of them has is a located validation problem."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.core.config import Config
from replicator.core.inventory import Inventory, MeshTenant, MeshWorkspace
from replicator.core.templating import RenderError
from tests.unit.test_compile import CAPS, NOW, PLATFORM, ROLE_ARN, compile_tenant, inventory, project, tenant

PATTERN = "#{tagRegion}.#{tagCostCenter}.#{tagTeam}.#{tagTier}-#{platformGroupAlias}"


def config_with_zone_tags(tags: dict[str, Any]) -> Config:
    return Config.model_validate(
        {
            "platforms": [{"identifier": PLATFORM, "type": "aws", "userGroupNamePattern": PATTERN}],
            "landingZones": [
                {
                    "identifier": "aws-default",
                    "platform": PLATFORM,
                    "roleMappings": {
                        "admin": {"platformGroupAlias": "admin", "platformRoles": [ROLE_ARN + "a"]}
                    },
                    "tags": tags,
                }
            ],
        }
    )


def tagged_tenant(tags: dict[str, Any]) -> MeshTenant:
    doc = tenant().model_dump(by_alias=True)
    doc["spec"]["tags"] = tags
    return MeshTenant.model_validate(doc)


def with_workspace(inv: Inventory, tags: dict[str, Any]) -> Inventory:
    doc = {"kind": "meshWorkspace", "metadata": {"name": "finance"}, "spec": {"tags": tags}}
    ws = MeshWorkspace.model_validate(doc)
    return inv.model_copy(update={"workspaces": {"finance": ws}})


def test_each_level_gives_its_tags_and_the_more_specific_wins() -> None:
    config = config_with_zone_tags({"region": "eu", "tier": "zone", "team": "zone"})
    t = tagged_tenant({"tier": 2, "team": "tenant"})  # numbers from YAML are text
    inv = with_workspace(
        inventory(projects=[project(tags={"team": "payments"})], tenants=[t]),
        {"costCenter": 4711, "team": "workspace", "region": "ws"},
    )
    (group,) = compile_tenant(config, inv, t, CAPS, NOW).groups
    # region: the zone over the workspace; costCenter: the workspace; team: the project over all;
    # tier: the tenant over the zone.
    assert group.name == "mst-eu.4711.payments.2-admin"


def test_a_tag_no_level_has_is_an_error_naming_the_levels() -> None:
    config = config_with_zone_tags({"region": "eu"})
    inv = inventory(tenants=[tenant()])
    with pytest.raises(RenderError, match="no tag 'costCenter' on the project, the tenant, its landing"):
        compile_tenant(config, inv, tenant(), CAPS, NOW)
