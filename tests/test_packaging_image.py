"""Fast checks of the "Ship it" pieces that need no image builder: derived bentofiles, registry
rules, and the probe vectors that frozen encoder weights must reproduce (encoders/fingerprint.py).
The full build -> push -> pull -> run path is tests/test_image.py (make image-test)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tools import image, packaging
from mixrec.config import load_config
from server_harness import REPO_ROOT


def test_public_base_keeps_the_committed_bentofile_and_derives_models_from_the_config(tmp_path):
    committed = yaml.safe_load(packaging.BENTOFILE.read_text())
    assert "models" not in committed  # derived per build from the config, never hand-kept
    spec = yaml.safe_load(packaging.derived_bentofile("public", {}, out_dir=tmp_path,
                                                      model_tag="mixrec-hybrid:v1").read_text())
    assert spec["models"] == ["mixrec-hybrid:v1"]
    assert {k: v for k, v in spec.items() if k != "models"} == committed


def test_local_base_installs_only_from_the_build_time_wheelhouse(tmp_path):
    committed = yaml.safe_load(packaging.BENTOFILE.read_text())
    spec = yaml.safe_load(packaging.derived_bentofile("local", {}, out_dir=tmp_path).read_text())
    assert spec["docker"] == {"base_image": packaging.LOCAL_BASE_IMAGE, "python_version": "3.11",
                              "dockerfile_template": packaging.DOCKERFILE_TEMPLATE}
    assert (REPO_ROOT / packaging.DOCKERFILE_TEMPLATE).is_file()
    assert spec["python"]["no_index"] is True and spec["python"]["find_links"] == [packaging.WHEELHOUSE_MOUNT]
    assert spec["python"]["packages"] == committed["python"]["packages"]
    assert spec["models"] == ["mixrec-hybrid:latest"] and spec["envs"] == committed["envs"]


def test_frozen_encoder_weights_are_packaged_and_configured(tmp_path):
    frozen = {"image": "mixrec-tiny-clip:abc", "audio": "mixrec-tiny-clap:def"}
    spec = yaml.safe_load(packaging.derived_bentofile("public", frozen, out_dir=tmp_path).read_text())
    assert spec["models"][0] == "mixrec-hybrid:latest"
    assert set(spec["models"][1:]) == set(frozen.values())
    envs = {e["name"]: e["value"] for e in spec["envs"]}
    assert envs["MIXREC__ENCODERS__IMAGE__WEIGHTS"] == "bentoml:mixrec-tiny-clip:abc"
    assert envs["MIXREC__ENCODERS__AUDIO__WEIGHTS"] == "bentoml:mixrec-tiny-clap:def"
    assert "docker" not in spec or "base_image" not in spec["docker"]


def test_staged_build_context_holds_the_included_code_and_the_docker_template(tmp_path):
    packaging.stage_sources(packaging.BENTOFILE, tmp_path / "public")
    assert (tmp_path / "public/services/recommender.py").is_file() and (tmp_path / "public/configs/bento.yaml").is_file()
    assert not (tmp_path / "public/tests").exists() and not (tmp_path / "public" / packaging.DOCKERFILE_TEMPLATE).exists()
    packaging.stage_sources(packaging.BENTOFILE, tmp_path / "local", "local")
    assert (tmp_path / "local" / packaging.DOCKERFILE_TEMPLATE).read_bytes() == \
        (REPO_ROOT / packaging.DOCKERFILE_TEMPLATE).read_bytes()


def test_unknown_base_is_refused(tmp_path):
    with pytest.raises(packaging.PackagingError):
        packaging.derived_bentofile("two words", {}, out_dir=tmp_path)


@pytest.mark.parametrize("ref,host,loopback", [
    ("127.0.0.1:5000/mixrec:1", "127.0.0.1:5000", True),
    ("localhost:5000/mixrec:1", "localhost:5000", True),
    ("docker://[::1]:5000/mixrec:1", "[::1]:5000", True),
    ("ghcr.io/acme/mixrec:1", "ghcr.io", False),
    ("acme/mixrec:1", "docker.io", False),
    ("10.0.0.5:5000/mixrec:1", "10.0.0.5:5000", False),
])
def test_registry_host_and_loopback(ref, host, loopback):
    assert image.registry_host(ref) == host
    assert image.is_loopback(image.registry_host(ref)) is loopback


def test_insecure_only_for_loopback_registries():
    assert image._tls_args("ghcr.io/acme/mixrec:1", insecure=False) == ["--tls-verify=true"]
    assert image._tls_args("127.0.0.1:5000/m:1", insecure=True) == ["--tls-verify=false"]
    with pytest.raises(image.ImageError, match="loopback"):
        image._tls_args("registry.example.com/mixrec:1", insecure=True)


def test_explicit_credentials_go_to_a_private_auth_file_not_argv(tmp_path):
    args = image._auth_args("ghcr.io/acme/m:1", "ci", "s3cret", None, tmp_path)
    assert args == ["--authfile", str(tmp_path / "auth.json")] and "s3cret" not in " ".join(args)
    auth = json.loads((tmp_path / "auth.json").read_text())["auths"]["ghcr.io"]["auth"]
    assert auth and (tmp_path / "auth.json").stat().st_mode & 0o077 == 0
    with pytest.raises(image.ImageError):
        image._auth_args("ghcr.io/acme/m:1", "ci", None, None, tmp_path)


def test_missing_builder_is_named(monkeypatch):
    monkeypatch.setattr(image.shutil, "which", lambda tool: None)
    with pytest.raises(image.ImageError, match="buildah is not installed.*apt-get install buildah"):
        image.require("buildah", "mixrec image build")


@pytest.mark.slow
def test_saved_weights_must_reproduce_their_probe_vectors(tmp_path):
    from encoders.errors import EncoderConfigError
    from encoders.fingerprint import PROBE_FILE, write_probe
    from encoders.registry import build_encoder

    cfg = load_config(REPO_ROOT / "configs/offline.yaml", environ={})
    img_cfg = cfg.encoders.image.model_copy(update={"device": "cpu", "fp16": False})
    assert img_cfg.weights == "random"
    enc = build_encoder(img_cfg, cfg.limits)
    d = tmp_path / "weights"
    enc.save(d)
    write_probe(d, enc)

    loaded = build_encoder(img_cfg.model_copy(update={"weights": f"local:{d}"}), cfg.limits)
    from encoders.fingerprint import probe_inputs
    np.testing.assert_allclose(loaded.encode(probe_inputs("image")), enc.encode(probe_inputs("image")), atol=1e-6)

    saved = json.loads((d / PROBE_FILE).read_text())
    saved["vectors"]["encode"][0][0] += 0.05  # as if the weights had been made by another torch build
    (d / PROBE_FILE).write_text(json.dumps(saved))
    with pytest.raises(EncoderConfigError, match="refuses to start"):
        build_encoder(img_cfg.model_copy(update={"weights": f"local:{d}"}), cfg.limits)


@pytest.mark.slow
def test_push_verifies_tls_and_sends_credentials_to_a_real_registry(tmp_path):
    """A loopback docker-registry with a self-signed certificate and htpasswd auth: the push is
    refused without the CA (TLS is verified by default) and without credentials, and goes
    through with both. The image is a few-byte scratch image made with buildah."""
    import os
    import shutil
    import ssl
    import subprocess
    import time

    import httpx

    from mixrec.process_tree import ProcessTree
    from server_harness import free_port

    missing = [t for t in ("buildah", "podman", "docker-registry", "openssl", "htpasswd") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {missing} (make image-tools; htpasswd is in apache2-utils)")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(certs / "ca.crt")], check=True, capture_output=True)
    subprocess.run(["htpasswd", "-Bbc", str(tmp_path / "htpasswd"), "ci", "s3cret"], check=True, capture_output=True)
    port = free_port()
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {tmp_path / 'data'}}}\n"
        f"auth:\n  htpasswd: {{realm: mixrec-test, path: {tmp_path / 'htpasswd'}}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {certs / 'ca.crt'}, key: {tmp_path / 'key.pem'}}}\n")
    tag = f"localhost/mixrec-tls-probe:{port}"
    ctr = subprocess.run(["buildah", "from", "scratch"], check=True, capture_output=True, text=True).stdout.strip()
    with open(tmp_path / "registry.log", "wb") as log:
        registry = ProcessTree(["docker-registry", "serve", str(tmp_path / "config.yml")], env=dict(os.environ),
                               output=log)
    try:
        (tmp_path / "hello.txt").write_text("mixrec")
        subprocess.run(["buildah", "copy", ctr, str(tmp_path / "hello.txt"), "/hello.txt"], check=True,
                       capture_output=True)
        subprocess.run(["buildah", "commit", "-q", ctr, tag], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"https://127.0.0.1:{port}/v2/", timeout=2,
                          verify=ssl.create_default_context(cafile=str(certs / "ca.crt")))
                break
            except httpx.HTTPError:
                assert registry.running() and time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
                time.sleep(0.3)
        ref = f"127.0.0.1:{port}/probe:1"
        with pytest.raises(image.ImageError, match="certificate|x509"):
            image.push(tag, ref, lambda line: None, username="ci", password="s3cret")
        with pytest.raises(image.ImageError, match="(?i)unauthorized|authentication"):
            image.push(tag, ref, lambda line: None, cert_dir=certs)
        digest = image.push(tag, ref, lambda line: None, username="ci", password="s3cret", cert_dir=certs)
        assert digest.startswith("sha256:")
    finally:
        registry.stop(5)
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
        subprocess.run(["podman", "rmi", tag], capture_output=True)
    assert not registry.leftovers()
