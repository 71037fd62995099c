"""What an operator installs to watch the daemon (deploy/grafana, deploy/prometheus, docs/monitoring.md)
checked against the daemon's metrics: every metric the alert rules and the dashboard name is one
the daemon exports, the docs list exactly those, promtool accepts the rules and the dashboard's
queries, and the rules' unit tests pass (each alert fires on some series and not on others), while
a broken or weakened copy of the rules fails them.

promtool comes from Debian's prometheus package (``make prometheus-backend``); without it the
promtool tests skip, except under ``CI=true``, where they fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from replicator.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "replicator-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "replicator-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "replicator-dashboard.json"
DOC = ROOT / "docs" / "monitoring.md"

METRIC = re.compile(r"\breplicator_[a-zA-Z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_VARIABLES = {
    # What Grafana puts in for its variables, so that promtool can parse a panel's query.
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$__interval": "1m",
    "$datasource": "prometheus",
    "$job": ".*",
    "$instance": ".*",
}


def promtool() -> str | None:
    return shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)


needs_promtool = pytest.mark.skipif(
    promtool() is None and os.environ.get("CI") != "true",
    reason="promtool is not installed (make prometheus-backend installs it: Debian's prometheus package)",
)


@pytest.fixture
def promtool_bin() -> str:
    found = promtool()
    if found is None:
        pytest.fail("promtool is not installed and CI=true: run make prometheus-backend")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- what the daemon exports --------------------------------------------------------------------


def exported() -> set[str]:
    """Every series name the daemon's registry can export: counters as ``*_total``, histograms as
    ``_bucket``, ``_sum`` and ``_count`` (read from the metric families and their types, so that
    labelled metrics nobody has set yet count too)."""
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def unknown_metrics(expressions: dict[str, str]) -> list[str]:
    """``where: name`` for each ``replicator_*`` name of the expressions that the daemon does not
    export (``expressions``: where it is -> PromQL)."""
    known = exported()
    return [
        f"{where}: {name}"
        for where, expr in expressions.items()
        for name in METRIC.findall(expr)
        if name not in known
    ]


# --- the files ----------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> dict[str, str]:
    """Where -> PromQL: each panel target's ``expr`` and each query variable's query."""
    found: dict[str, str] = {}
    for panel in panels(board):
        for target in panel.get("targets", []):
            found[f"panel {panel['id']} ({panel['title']}) {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found[f"variable {variable['name']}"] = query["query"] if isinstance(query, dict) else query
    return found


def rule_expressions() -> dict[str, str]:
    return {f"alert {rule['alert']}": rule["expr"] for rule in rules()}


def series_of_the_rule_tests() -> dict[str, str]:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    return {
        f"test {i} series {j}": series["series"]
        for i, test in enumerate(doc["tests"])
        for j, series in enumerate(test["input_series"])
    }


# --- metric names -------------------------------------------------------------------------------


def test_the_alert_rules_name_only_metrics_the_daemon_exports() -> None:
    expressions = rule_expressions()
    assert len(expressions) >= 10
    assert unknown_metrics(expressions) == []
    assert unknown_metrics(series_of_the_rule_tests()) == [], "the rule tests feed series nobody exports"


def test_the_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 20
    assert unknown_metrics(queries) == []


def test_a_misspelt_or_unsuffixed_metric_is_caught() -> None:
    found = unknown_metrics(
        {
            "typo": "sum(rate(replicator_error_total[5m]))",
            "counter without _total": "rate(replicator_lease_lost[5m])",
            "histogram without _bucket": "rate(replicator_event_loop_lag_seconds[5m])",
            "fine": "replicator_config_valid == 0 and rate(replicator_platform_throttled_total[5m]) > 0",
        }
    )
    assert found == [
        "typo: replicator_error_total",
        "counter without _total: replicator_lease_lost",
        "histogram without _bucket: replicator_event_loop_lag_seconds",
    ]


def test_the_new_metrics_are_alerted_on_and_shown() -> None:
    used = " ".join([*rule_expressions().values(), *dashboard_queries(dashboard()).values()])
    for name in ("replicator_lease_lost_total", "replicator_platform_throttled_total"):
        assert name in exported()
        assert name in used


def test_the_docs_list_every_metric_with_its_type_and_labels() -> None:
    rows = re.findall(r"^\| `(replicator_[a-z0-9_]+)` \| (\w+) \| ([^|]+) \|", DOC.read_text(), re.M)
    documented = {name: (kind, labels.strip()) for name, kind, labels in rows}
    metrics = Metrics()
    expected: dict[str, tuple[str, str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):  # its label names, also before any series has them
            kind = str(metric._type)
            name = metric._name + ("_total" if kind == "counter" else "")
            expected[name] = (kind, ", ".join(f"`{label}`" for label in metric._labelnames) or "-")
    assert len(expected) == len(list(metrics.registry.collect())), "every metric is an attribute of Metrics"
    assert documented == expected


# --- the alert rules ----------------------------------------------------------------------------


def test_every_alert_has_a_for_a_severity_and_its_annotations() -> None:
    for rule in rules():
        name = rule.get("alert")
        assert name, f"only alerting rules here: {rule}"
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert all(text.strip() for text in notes.values()), name
        assert re.search(r"replicator (status|validate|explain|plan)|logs", notes["runbook"]), name
    assert len({rule["alert"] for rule in rules()}) == len(rules()), "alert names are unique"


def test_every_alert_has_a_firing_and_a_quiet_case_in_the_rule_tests() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - firing == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts no test expects quiet"


@needs_promtool
def test_promtool_accepts_the_rules(promtool_bin: str) -> None:
    checked = run(promtool_bin, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@needs_promtool
def test_promtool_refuses_a_broken_copy_of_the_rules(promtool_bin: str, tmp_path: Path) -> None:
    text = RULES.read_text()
    for what, broken in {
        "bad PromQL": text.replace("> 3600", "> > 3600", 1),
        "bad duration": text.replace("for: 10m", "for: ten minutes", 1),
        "bad template": text.replace("{{ $labels.tenant }}", "{{ $labels.tenant", 1),
    }.items():
        assert broken != text, what
        copy = tmp_path / "broken.yaml"
        copy.write_text(broken)
        checked = run(promtool_bin, "check", "rules", str(copy))
        assert checked.returncode != 0, f"{what}: {checked.stdout}"


@needs_promtool
def test_the_rule_unit_tests_pass(promtool_bin: str) -> None:
    tested = run(promtool_bin, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_the_rule_unit_tests_fail_when_an_alert_no_longer_fires(promtool_bin: str, tmp_path: Path) -> None:
    """The firing cases really fire: with a threshold raised out of reach, or an alert that never
    leaves pending, promtool fails and names the alert."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    for alert, weakened in {
        "ReplicatorTenantNotConverged": text.replace("> 3600", "> 36000", 1),
        "ReplicatorPlatformThrottled": text.replace(") > 0.05", ") > 0.5", 1),
        "ReplicatorLeaseLost": text.replace("        for: 0m\n", "        for: 1h\n", 1),
    }.items():
        assert weakened != text, alert
        (tmp_path / RULES.name).write_text(weakened)
        tested = run(promtool_bin, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
        assert tested.returncode != 0, alert
        assert f"alertname: {alert}," in tested.stdout + tested.stderr, tested.stdout


def test_the_prometheusrule_of_the_docs_holds_the_rules(tmp_path: Path) -> None:
    """The shell lines of docs/monitoring.md that wrap the rule file in a PrometheusRule."""
    wrap = r"```sh\n\s*(\{ printf 'apiVersion: monitoring.coreos.com/v1.*?)```"
    block = re.search(wrap, DOC.read_text(), re.S)
    assert block is not None
    command = block[1].replace("| kubectl apply -f -", "")
    made = run("bash", "-c", command)
    assert made.returncode == 0, made.stderr
    resource = yaml.safe_load(made.stdout)
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"] == yaml.safe_load(RULES.read_text())


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "replicator"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert [t["refId"] for t in panel["targets"]] == sorted({t["refId"] for t in panel["targets"]})


def test_every_panel_takes_its_data_source_from_the_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)
    for panel in panels(board):
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, panel["title"]

    def uids(node: Any) -> Iterator[str]:
        """Every data source uid anywhere in the file."""
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict):
                yield str(source.get("uid"))
            elif isinstance(source, str):
                yield source
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for value in node:
                yield from uids(value)

    assert set(uids(board)) == {"${datasource}"}, "no data source is written into the dashboard"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queries = " ".join(dashboard_queries(dashboard()).values())
    for name in (
        "replicator_reconcile_duration_seconds_count",
        "replicator_errors_total",
        "replicator_reconcile_duration_seconds_bucket",
        "replicator_changes_applied_total",
        "replicator_warnings",
        "replicator_workqueue_depth",
        "replicator_workqueue_queue_duration_seconds_bucket",
        "replicator_workqueue_unfinished_work_seconds",
        "replicator_workqueue_longest_running_processor_seconds",
        "replicator_platform_calls_total",
        "replicator_platform_throttled_total",
        "replicator_rate_limit_requests_per_second",
        "replicator_lease_lost_total",
        "replicator_config_valid",
        "replicator_event_loop_lag_seconds_bucket",
        "replicator_last_success_timestamp_seconds",
    ):
        assert name in queries, name


@needs_promtool
def test_promtool_parses_every_dashboard_query(promtool_bin: str, tmp_path: Path) -> None:
    """Each query, with Grafana's variables put in, as a recording rule: promtool parses them all."""
    recorded = []
    for i, expr in enumerate(dashboard_queries(dashboard()).values()):
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        if expr.startswith("label_values("):  # a Grafana function, not PromQL: its selector
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        recorded.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run(promtool_bin, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
