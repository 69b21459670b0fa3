"""The Grafana dashboard and the Prometheus alert rules are valid and use only metrics mixrec exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from mixrec.config import REPO_ROOT
from services import ops_metrics

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "mixrec-dashboard.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bmixrec_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_sum", "_count")
REQUIRED_ALERTS = {"MixrecEventsPendingGrowing", "MixrecCheckpointFailures", "MixrecEncoderFailures",
                   "MixrecModelTooOld"}


def exported() -> set[str]:
    return {m._name for m in ops_metrics.metrics().values()}


def used(exprs) -> set[str]:
    names = set()
    for e in exprs:
        for n in METRIC.findall(e):
            for s in SUFFIXES:
                if n.endswith(s) and n.removesuffix(s) in exported():
                    n = n.removesuffix(s)
            names.add(n)
    return names


def test_dashboard_is_a_grafana_dashboard_over_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids, exprs = set(), []
    for p in dash["panels"]:
        assert {"id", "type", "title", "gridPos", "targets"} <= set(p), p.get("title")
        assert p["id"] not in ids
        ids.add(p["id"])
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and 0 <= p["gridPos"]["x"] < 24
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
        exprs += [t["expr"] for t in p["targets"]]
    assert used(exprs) <= exported(), used(exprs) - exported()
    assert used(exprs) == exported(), f"metrics without a panel: {exported() - used(exprs)}"


def test_alert_rules_parse_and_cover_the_issue():
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for r in rules:
        assert r["expr"].strip() and r["annotations"]["summary"] and r["labels"]["severity"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smhd]", r["for"])
    assert used(r["expr"] for r in rules) <= exported()


def test_promtool_accepts_the_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/browser.sh installs Debian's prometheus package)")
    proc = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
