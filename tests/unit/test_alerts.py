"""deploy/prometheus: the alert rules are well formed, name only metrics the services export,
and fire when they should (promtool's own checks and rule unit tests, tests/unit/alerts_test.yml).

A typo in a metric name makes an alert silently never fire, so the names are checked against
the services' real registries, not against a list kept by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.consumer.metrics import WorkerMetrics
from conveyor.producer.monitoring.metrics import ProducerMetrics
from tests.support import REPO

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")
REQUIRED_ALERTS = {
    "ConveyorBacklogGrowingNoConsumers",
    "ConveyorTaskFailureRatioHigh",
    "ConveyorDeadLettersNotEmpty",
    "ConveyorWorkerLost",
    "ConveyorOldestQueuedTaskTooOld",
}
# A metric name where PromQL uses one: before a selector, a range, a closing parenthesis,
# whitespace or the end. Functions, keywords and label names never start with `conveyor_`.
METRIC_NAME = re.compile(r"\b(conveyor_[A-Za-z0-9_:]*)(?=[\s{\[)]|$)")
# The sample names prometheus_client derives from a family's name, by type.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    (group,) = document["groups"]
    assert group["name"] == "conveyor"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def _registries() -> list[CollectorRegistry]:
    return [ProducerMetrics().registry, WorkerMetrics().registry]


def _exported_names(registries: list[CollectorRegistry]) -> set[str]:
    """Every sample name the registries can export, whether or not a labelled series exists
    yet (a labelled counter has no sample until its first `.labels(...)`)."""
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
            names.update(sample.name for sample in family.samples)
    return names


def _metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool's path. Missing: skipped on a developer's machine, a failure in CI (which
    installs Debian's `prometheus` package for it)."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not on PATH (Debian: apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_alert_rule_has_expr_for_severity_and_summary() -> None:
    rules = _rules()
    assert REQUIRED_ALERTS <= {rule.get("alert") for rule in rules}
    for rule in rules:
        assert rule.keys() >= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_alert_expressions_name_only_metrics_the_services_export() -> None:
    exported = _exported_names(_registries())
    for rule in _rules():
        used = _metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no conveyor_ metric found in its expr"
        assert used <= exported, f"{rule['alert']}: not exported: {sorted(used - exported)}"


def test_alert_metric_names_appear_in_a_real_exposition() -> None:
    """Record one of each and render /metrics' text: the names and labels the rules select
    on (queue, state, task) are what a scrape returns."""
    producer, worker = ProducerMetrics(), WorkerMetrics()
    producer.submitted.labels("echo").inc()
    producer.publish_seconds.observe(0.002)
    producer.event_store_lag_seconds.observe(0.05)
    producer.queue_messages.labels("default").set(3)
    producer.queue_consumers.labels("default").set(0)
    producer.oldest_queued_seconds.set(700)
    producer.dead_letters.set(2)
    producer.workers.labels("lost").set(1)
    for counter in (worker.started, worker.failed, worker.retried):
        counter.labels("echo").inc()
    worker.run_seconds.labels("echo", "failed").observe(0.1)

    text = "".join(generate_latest(m.registry).decode() for m in (producer, worker))
    samples = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    used = set().union(*(_metric_names(rule["expr"]) for rule in _rules()))
    assert used <= samples, sorted(used - samples)
    assert 'conveyor_queue_consumers{queue="default"} 0.0' in text
    assert 'conveyor_workers{state="lost"} 1.0' in text
    assert 'conveyor_tasks_failed_total{task="echo"} 1.0' in text


def test_promtool_accepts_the_rules_and_the_config(promtool: str) -> None:
    for args in (("check", "rules", ALERTS), ("check", "config", CONFIG)):
        result = _run(promtool, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_their_unit_tests_expect(promtool: str) -> None:
    """Worker lost and dead letters fire; a growing backlog fires only with zero consumers;
    the failure ratio counts failures and retries per task, only with traffic."""
    result = _run(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
