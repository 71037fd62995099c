"""Request budgets: what each driver says its platform's quota belongs to, one budget per quota
owner (platform entries that name the same one share it, at the smallest rate), and a replica
alone on SQLite keeping the whole rate. The split between replicas on PostgreSQL is in
tests/integration/test_quota_shares.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from platforms.registry import driver_class
from replicator.inputs.loader import load
from replicator.inputs.validate import Validated, validate
from replicator.service.budgets import Budget, QuotaShares
from replicator.service.metrics import Metrics
from replicator.service.workqueue import Priority
from state import Store

ARN = "arn:aws:sso:::instance/ssoins-1111"
AWS = {"region": "eu-central-1", "identityStoreId": "d-1", "instanceArn": ARN}


def owner(platform_type: str, block: dict[str, Any], identifier: str = "x.one") -> str:
    cls = driver_class(platform_type)
    assert cls is not None
    return cls.quota_owner(identifier, cls.options_model.model_validate(block))


def test_aws_quota_is_the_identity_center_instance() -> None:
    assert owner("aws", AWS) == f"aws:eu-central-1:{ARN}"
    assert owner("aws", {**AWS, "assumeRoleArn": "arn:aws:iam::1:role/r"}, "aws.two") == owner("aws", AWS)
    assert owner("aws", {**AWS, "instanceArn": "arn:aws:sso:::instance/ssoins-2222"}) != owner("aws", AWS)
    assert owner("aws", {**AWS, "region": "us-east-1"}) != owner("aws", AWS)


def test_azure_quota_is_the_tenant_and_the_app() -> None:
    secret = {"clientId": "app-1", "clientSecret": {"env": "S"}}
    base = {"tenantId": "t-1", "credentials": secret}
    assert owner("azure", base) == "azure:t-1:app-1"
    same_app = {"tenantId": "t-1", "credentials": {"clientId": "app-1", "certificateFile": "/c.pem"}}
    assert owner("azure", same_app) == owner("azure", base)
    assert owner("azure", {**base, "tenantId": "t-2"}) != owner("azure", base)
    other_app = {"tenantId": "t-1", "credentials": {**secret, "clientId": "app-2"}}
    assert owner("azure", other_app) != owner("azure", base)
    workload = {"tenantId": "t-1", "credentials": {"workloadIdentity": {"clientId": "app-3"}}}
    assert owner("azure", workload) == "azure:t-1:app-3"
    system = {"tenantId": "t-1", "credentials": {"managedIdentity": {}}}
    assert owner("azure", system) == "azure:t-1:ManagedIdentityCredentials"


def test_gcp_quota_is_the_credentials_and_the_user_they_act_as() -> None:
    base = {"customerId": "C01", "domain": "example.com", "credentialsFile": "/sa.json"}
    assert owner("gcp", base) == "gcp:file:/sa.json:self"
    assert owner("gcp", {**base, "customerId": "C02", "domain": "example.org"}) == owner("gcp", base)
    assert (
        owner("gcp", {**base, "adminSubject": "admin@example.com"}) == "gcp:file:/sa.json:admin@example.com"
    )
    assert owner("gcp", {**base, "credentialsFile": {"env": "GCP_KEY"}}) == "gcp:env:GCP_KEY:self"
    no_file = {k: v for k, v in base.items() if k != "credentialsFile"}
    assert owner("gcp", no_file) == "gcp:application-default:self"


def test_keystone_quota_is_the_identity_endpoint() -> None:
    creds = {"username": "u", "password": {"env": "P"}}
    base = {"authUrl": "https://keystone.example.com/v3/", "credentials": creds}
    assert owner("openstack", base) == "openstack:https://keystone.example.com/v3"
    assert owner("openstack", {**base, "groupDomain": "Other"}) == owner("openstack", base)
    override = {**base, "endpointOverride": "https://internal:5000/v3"}
    assert owner("openstack", override) == "openstack:https://internal:5000/v3"
    assert owner("openstack", {"cloud": "prod"}) == "openstack:cloud:prod"


@pytest.mark.parametrize("platform_type", ["kubernetes", "openshift"])
def test_kubernetes_quota_is_the_api_server(platform_type: str) -> None:
    assert owner(platform_type, {"server": "https://api.example.com:6443/"}) == (
        "kubernetes:https://api.example.com:6443"
    )
    assert owner(platform_type, {"kubeconfig": "/k", "context": "prod"}) == "kubernetes:kubeconfig:/k#prod"
    assert owner(platform_type, {}) == "kubernetes:in-cluster"


def test_cloud_foundry_quota_is_the_cloud_controller_and_the_client() -> None:
    base = {"apiUrl": "https://api.sys.example.com", "clientId": "repl", "clientSecret": {"env": "S"}}
    assert owner("cloudfoundry", base) == "cloudfoundry:https://api.sys.example.com:repl"
    assert owner("cloudfoundry", {**base, "clientId": "other"}) != owner("cloudfoundry", base)


def test_options_that_name_no_quota_owner_make_a_quota_of_the_entry() -> None:
    from platforms.contract import Driver

    assert Driver.quota_owner("mem.one", object()) == "platform:mem.one"


def site(tmp_path: Path, platforms: dict[str, str], rates: dict[str, float]) -> Validated:
    """A config with one AWS platform entry per identifier -> instance ARN, and no tenants."""
    entries = [
        {"identifier": i, "type": "aws", "aws": {**AWS, "instanceArn": arn}} for i, arn in platforms.items()
    ]
    config = {
        "inventory": ["org.yaml"],
        "platforms": entries,
        "landingZones": [{"identifier": "lz", "platform": next(iter(platforms))}],
        "schedule": {"rateLimits": rates},
    }
    (tmp_path / "org.yaml").write_text("")
    (tmp_path / "replicator.yaml").write_text(yaml.safe_dump(config))
    return validate(load(tmp_path / "replicator.yaml"))


def test_entries_with_one_quota_owner_share_one_budget_at_the_smallest_rate(tmp_path: Path) -> None:
    other = "arn:aws:sso:::instance/ssoins-2222"
    v = site(tmp_path, {"aws.a": ARN, "aws.b": ARN, "aws.c": other, "aws.d": ARN}, {"aws.a": 20, "aws.b": 10})
    budgets = QuotaShares("r1").configure(v.config, {}, None)
    assert budgets["aws.a"] is budgets["aws.b"] is budgets["aws.d"]
    assert budgets["aws.c"] is not budgets["aws.a"]
    assert (budgets["aws.a"].rate, budgets["aws.a"].owner) == (10, f"aws:eu-central-1:{ARN}")
    assert budgets["aws.c"].rate is None, "no entry of that quota has a rate limit"


def test_a_reload_keeps_the_budget_of_a_quota_and_takes_its_new_rate(tmp_path: Path) -> None:
    quotas = QuotaShares("r1")
    first = quotas.configure(site(tmp_path, {"aws.a": ARN}, {"aws.a": 20}).config, {}, None)
    first["aws.a"].share(2)
    again = quotas.configure(site(tmp_path, {"aws.a": ARN, "aws.b": ARN}, {"aws.b": 8}).config, first, None)
    assert again["aws.a"] is first["aws.a"] is again["aws.b"]
    assert (again["aws.a"].rate, again["aws.a"].effective_rate) == (8, 4)


def test_a_budget_set_by_hand_stays_its_platforms(tmp_path: Path) -> None:
    mine = Budget(None)
    budgets = QuotaShares("r1").configure(
        site(tmp_path, {"aws.a": ARN}, {"aws.a": 20}).config, {"aws.a": mine}, None
    )
    assert budgets["aws.a"] is mine


async def test_on_sqlite_a_replica_keeps_the_whole_rate_and_registers_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        metrics = Metrics()
        quotas = QuotaShares("r1", metrics)
        budget = quotas.configure(site(tmp_path, {"aws.a": ARN}, {"aws.a": 20}).config, {}, store)["aws.a"]
        assert budget.join is None
        async with budget:
            pass
        await quotas.renew()
        assert (budget.replicas, budget.effective_rate) == (1, 20)
        assert store.quota_shares() == {}
        owner_key = f"aws:eu-central-1:{ARN}"
        rate = metrics.registry.get_sample_value(
            "replicator_rate_limit_requests_per_second", {"quota_owner": owner_key}
        )
        assert rate == 20
    finally:
        store.close()


def test_a_share_divides_the_configured_rate() -> None:
    budget = Budget(20, "q")
    budget.share(2)
    assert budget.effective_rate == 10
    budget.share(0)
    assert (budget.replicas, budget.effective_rate) == (1, 20)
    assert Budget(None, "q").effective_rate is None


async def test_a_changes_request_goes_before_the_resync_requests_waiting_at_the_quota() -> None:
    budget = Budget(50, "q")  # a burst of 25, then one request every 20 ms
    order: list[str] = []

    async def send(name: str, priority: Priority) -> None:
        async with budget.at(priority):
            order.append(name)

    for _ in range(25):  # the burst: the bucket is full afterwards
        await send("burst", Priority.RESYNC)
    sweep = [asyncio.ensure_future(send(f"resync{i}", Priority.RESYNC)) for i in range(10)]
    await asyncio.sleep(0)  # they wait at the pacer, in order
    change = asyncio.ensure_future(send("change", Priority.CHANGE))
    await asyncio.gather(*sweep, change)
    waited = order[25:]
    assert waited.index("change") <= 1, waited  # the first resync may have been let through already
    assert [n for n in waited if n != "change"] == [f"resync{i}" for i in range(10)], "FIFO within a priority"


async def test_a_waiter_cancelled_at_the_pacer_gives_its_turn_to_the_next() -> None:
    budget = Budget(50, "q")
    for _ in range(25):
        async with budget:
            pass
    first = asyncio.ensure_future(budget.enter(Priority.RESYNC))
    second = asyncio.ensure_future(budget.enter(Priority.RESYNC))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, timeout=1)
    assert budget.in_flight == 1, "the cancelled one left, the second holds its turn"
    await budget.__aexit__(None, None, None)
    assert budget.in_flight == 0
