"""The Kubernetes manifests (deploy/k8s) validate against the Kubernetes schemas and fit mixrec.

Schemas: ``kubernetes-validate`` (dev extra) ships the JSON schemas of every Kubernetes release
offline; strict mode also refuses unknown fields (a misspelt ``readinessProbe`` would pass a loose
check). ``kubectl kustomize`` renders the base and the CPU-only overlay when kubectl is installed.
Beyond the schemas: every name one manifest uses from another resolves, and every MIXREC_* setting
they give is a real mixrec setting (the config loader refuses unknown fields).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mixrec.config import load_config

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
BASE = K8S / "base"
KUBERNETES_VERSION = "1.30"
ENCODERS = {"text": "TextEncoder", "image": "ImageEncoder", "audio": "AudioEncoder"}


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    return [d for name in listed for d in _docs((BASE / name).read_text())]


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _validate(docs: list[dict]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    for d in docs:
        try:
            kv.validate(d, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")


def test_every_manifest_validates_against_the_kubernetes_schemas(base):
    _validate(base)
    kinds = sorted(d["kind"] for d in base)
    assert kinds.count("Deployment") == 4 and kinds.count("Service") == 4
    assert {"HorizontalPodAutoscaler", "PersistentVolumeClaim", "ConfigMap", "CronJob"} <= set(kinds)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: kustomize rendering not checked")
@pytest.mark.parametrize("target", ["base", "overlays/cpu-only"])
def test_kustomize_renders_valid_manifests(target):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = _docs(out.stdout)
    _validate(docs)
    assert all(d["metadata"].get("namespace") == "mixrec" for d in docs if d["kind"] != "Namespace")
    gpus = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
            and "nvidia.com/gpu" in d["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert sorted(gpus) == ([] if target.endswith("cpu-only") else [f"mixrec-{m}-encoder" for m in sorted(ENCODERS)])


def test_each_service_is_one_deployment_of_the_same_image_behind_a_service(base):
    deployments, services = _by(base, "Deployment"), _by(base, "Service")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        c = pod["spec"]["containers"][0]
        assert c["image"] == "mixrec"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    for slot, service in ENCODERS.items():
        c = deployments[f"mixrec-{slot}-encoder"]["spec"]["template"]["spec"]["containers"][0]
        assert c["args"][:3] == ["start-http-server", "--service-name", service]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_encoder_services_named_are_the_bentos(base):
    from services.recommender import Recommender

    served = set(Recommender.all_services())
    named = {d["spec"]["template"]["spec"]["containers"][0]["args"][2] for d in _by(base, "Deployment").values()
             if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "start-http-server"}
    assert named == set(ENCODERS.values()) and named <= served


def test_the_recommender_reads_postgres_from_a_secret_and_shares_one_rwx_volume(base):
    rec = _by(base, "Deployment")["mixrec-recommender"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in rec["containers"][0]["env"]}
    assert env["MIXREC__STORAGE__URL"]["valueFrom"]["secretKeyRef"] == {"name": "mixrec-postgres", "key": "url"}
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in rec["volumes"] if "persistentVolumeClaim" in v)
    assert _by(base, "PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["mountPath"] for m in rec["containers"][0]["volumeMounts"]}
    cfg = _by(base, "ConfigMap")["mixrec-env"]["data"]
    for key in ("MIXREC__STORAGE__MEDIA_DIR", "MIXREC__SERVING__MODEL_CHANNEL"):
        assert any(cfg[key].startswith(m + "/") for m in mounts), key
    hpa = _by(base, "HorizontalPodAutoscaler")["mixrec-recommender"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mixrec-recommender" and hpa["minReplicas"] >= 2


def test_the_settings_are_real_mixrec_settings_and_point_at_the_encoder_services(base):
    cfg = _by(base, "ConfigMap")["mixrec-env"]["data"]
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "bento.yaml",
                         environ={**cfg, "MIXREC__STORAGE__URL": "postgresql+psycopg://u@db/mixrec"})
    services = _by(base, "Service")
    for slot in ENCODERS:
        url = getattr(config.serving, f"{slot}_encoder").url
        host, port = url.removeprefix("http://").split(":")
        assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]], url
    assert config.serving.model_channel and config.serving.update_every == 0
    cron = _by(base, "CronJob")["mixrec-model-update"]
    script = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][-1]
    assert "http://mixrec-recommender:3000/update_model" in script
