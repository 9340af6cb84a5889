"""k8s/monitoring/rules.yaml with promtool (Debian's prometheus package): the rules check clean, and the unit tests
in k8s/monitoring/tests/ show each alert firing when it should and silent when it should not. Also: the committed
dashboards are what tools/ferry_tools/dashboards.py generates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ferry_tools import dashboards, monitoring

UNIT_TESTS = monitoring.MONITORING / "tests" / "rules_test.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/system-deps.sh promtool (Debian package prometheus)"
    return found


def write_rules(folder: Path, groups: dict) -> Path:
    """The rule file next to a copy of the unit tests, which name it relative to themselves."""
    (folder / "ferry.rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return folder / UNIT_TESTS.name


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules(tmp_path):
    write_rules(tmp_path, monitoring.rule_groups())
    done = run("check", "rules", str(tmp_path / "ferry.rules.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(group["rules"]) for group in monitoring.rule_groups()["groups"])
    assert f"SUCCESS: {rules} rules found" in done.stdout


def test_promtool_unit_tests_pass(tmp_path):
    done = run("test", "rules", str(write_rules(tmp_path, monitoring.rule_groups())))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_and_a_runbook():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    alerts = [r for g in monitoring.rule_groups()["groups"] for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} == tested
    doc = (monitoring.REPO / "docs" / "observability.md").read_text().lower()
    for alert in alerts:
        anchor = alert["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in doc, f"docs/observability.md has no runbook section for {anchor}"


@pytest.mark.parametrize(
    ("alert", "edit"),
    [
        ("FerryMemoryNearLimit", ("> 0.9", "> 0.99")),
        ("FerryErrorBudgetBurnFast", ("(14.4 * 0.001)", "(144 * 0.001)")),
        ("FerryModelNotReady", ("for: 5m", "for: 10m")),
    ],
)
def test_unit_tests_catch_a_broken_rule(tmp_path, alert, edit):
    """The unit tests are not vacuous: a rule made too lax or too slow fails them, naming the alert."""
    groups = monitoring.rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                text = yaml.safe_dump(rule)
                assert edit[0] in text
                rule.clear()
                rule.update(yaml.safe_load(text.replace(edit[0], edit[1])))
    done = run("test", "rules", str(write_rules(tmp_path, groups)))
    assert done.returncode != 0 and alert in done.stdout + done.stderr, done.stdout


def test_dashboards_are_generated_from_code():
    for name in dashboards.DASHBOARDS:
        assert (dashboards.OUT / f"{name}.json").read_text() == dashboards.render(name), (
            f"{name}.json differs from tools/ferry_tools/dashboards.py: run .venv/bin/python -m ferry_tools.dashboards"
        )
    assert sorted(p.stem for p in dashboards.OUT.glob("*.json")) == sorted(dashboards.DASHBOARDS)
