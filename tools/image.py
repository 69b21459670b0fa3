"""The built Bento as an OCI image, without a Docker daemon: build, push, pull, run.

- build: BentoML's own ``bentoml containerize --backend buildah`` with ``--isolation chroot``
  (RUN steps without a container runtime). A Bento built for a non-public base
  (``mixrec build --base local``) installs its packages only from a wheelhouse that pip
  makes on the host (where this machine's indexes and proxy CA are configured); the
  wheelhouse is bind-mounted read-only for the build and is not part of the image.
- push / pull: ``podman push`` / ``podman pull``; credentials from flags, else podman's usual
  places (``REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
  ``~/.docker/config.json``). TLS is verified unless ``insecure`` is asked for, and that is
  only allowed for a loopback registry.
- run: ``podman run -d`` with the state directory as a volume and the database URL as env,
  the port published on 127.0.0.1, then wait for ``/readyz``.

Every external command is echoed and its output streamed, so the console shows progress.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tools.packaging import LOCAL_BASE_IMAGE, WHEELHOUSE_MOUNT, bento_path, bentoml_executable, child_env

CONTAINER_PORT = 3000
STATE_MOUNT = "/data"  # inside the container
APT_PACKAGE = {"buildah": "buildah", "podman": "podman", "skopeo": "skopeo", "mmdebstrap": "mmdebstrap"}

Echo = Callable[[str], None]


class ImageError(RuntimeError):
    """An image step cannot be done as asked; the message says why and what to do."""


def require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"{tool} is not installed, and {why} needs it: on Debian/Ubuntu "
                         f"`apt-get install {APT_PACKAGE.get(tool, tool)}` (no Docker daemon is needed)")
    return path


def _run(cmd: Sequence[str], echo: Echo, *, env: Mapping[str, str] | None = None, timeout_s: float = 3600,
         what: str = "", quiet: bool = False, cwd: str | None = None) -> str:
    """Run ``cmd``, echo it, stream its output line by line (unless quiet); return the output."""
    echo("$ " + " ".join(cmd))
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL, cwd=cwd)
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if not quiet:
            echo(line.rstrip("\n"))
        if time.monotonic() > deadline:
            proc.kill()
            break
    code = proc.wait()
    out = "".join(lines)
    if code != 0:
        raise ImageError(f"{what or cmd[0]} failed (exit {code}):\n{out[-4000:]}")
    return out


# ----------------------------------------------------------------- build

def bento_base_image(bento_tag: str) -> str | None:
    import bentoml

    return bentoml.get(bento_tag).info.docker.base_image


def wheelhouse(bento_tag: str, echo: Echo, cache_dir: Path | None = None) -> Path:
    """A directory of wheels for everything the Bento's requirements.txt resolves to.

    Made by ``pip wheel`` on the host, which sees this machine's pip configuration (local
    indexes, find-links, proxy CA) and builds the packages that need compiling (lightfm-next
    1.19 ships no wheel; 1.18.7's manylinux wheel does not import on glibc >= 2.31) on the
    host, so the image needs no compiler. The versions are constrained to this environment's
    ``pip freeze``: the image runs exactly the package versions mixrec was tested with here.
    Cached under ``cache_dir`` (default ``$MIXREC_WHEELHOUSE_CACHE`` or
    ``~/.cache/mixrec/wheelhouse``) per requirements + constraints.
    """
    req = bento_path(bento_tag) / "env" / "python" / "requirements.txt"
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    constraints = "".join(line + "\n" for line in frozen.splitlines() if line and " @ " not in line
                          and not line.startswith(("-e", "#")))
    key = hashlib.sha256(req.read_bytes() + b"\0" + constraints.encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("MIXREC_WHEELHOUSE_CACHE") or "~/.cache/mixrec/wheelhouse").expanduser()
    dest = root / key
    if (dest / ".complete").exists():
        echo(f"wheelhouse {dest} (cached for these requirements and constraints)")
        return dest
    partial = root / f"{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "constraints.txt").write_text(constraints)
    _run([sys.executable, "-m", "pip", "wheel", "--progress-bar", "off", "--wheel-dir", str(partial),
          "-r", str(req), "-c", str(partial / "constraints.txt")], echo, what="pip wheel (wheelhouse)")
    (partial / ".complete").write_text(req.read_text())
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def image_exists(ref: str) -> bool:
    podman = shutil.which("podman")
    if podman is None:
        return subprocess.run([require("buildah", "checking images"), "inspect", "--type", "image", ref],
                              capture_output=True).returncode == 0
    return subprocess.run([podman, "image", "exists", ref], capture_output=True).returncode == 0


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float


def build(bento_tag: str, image_tag: str, echo: Echo, *, layers: bool = True, cache_dir: Path | None = None,
          timeout_s: float = 3600, no_cache: bool = False) -> BuiltImage:
    """``bentoml containerize --backend buildah`` the Bento into ``image_tag`` (containers-storage)."""
    require("buildah", "mixrec image build")
    base = bento_base_image(bento_tag)
    opts = ["--opt", "isolation=chroot"]
    if layers:
        opts += ["--opt", "layers"]
    if no_cache:  # build every step again (and refresh the layer cache)
        opts += ["--opt", "no-cache"]
    if base:  # built with `mixrec build --base local|REF`: offline install from the wheelhouse
        if base == LOCAL_BASE_IMAGE and not image_exists(base):
            raise ImageError(f"the Bento {bento_tag} is built on {base}, which is not in containers-storage: "
                             "make it with deploy/base-image.sh (or `make base-image`)")
        wh = wheelhouse(bento_tag, echo, cache_dir)
        # the key busts buildah's layer cache when the wheelhouse changes (deploy/Dockerfile.j2)
        opts += ["--opt", f"volume={wh}:{WHEELHOUSE_MOUNT}:ro", "--opt", f"build-arg=MIXREC_WHEELHOUSE={wh.name}"]
    t0 = time.perf_counter()
    # containerize copies the Bento to a temp dir and re-renders the Dockerfile there; BentoML
    # then refuses a dockerfile_template outside the current directory, so run it from the temp root.
    _run([bentoml_executable(), "containerize", bento_tag, "--backend", "buildah", "--image-tag", image_tag, *opts],
         echo, env=child_env({"BUILDAH_ISOLATION": "chroot"}), timeout_s=timeout_s, what="bentoml containerize",
         cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    info = inspect(image_tag)
    return BuiltImage(tag=image_tag, image_id=info["Id"], size_bytes=int(info["Size"]), seconds=seconds)


def inspect(ref: str) -> dict:
    podman = require("podman", "inspecting images")
    out = subprocess.run([podman, "image", "inspect", ref], capture_output=True, text=True)
    if out.returncode != 0:
        raise ImageError(f"no image {ref!r} in containers-storage: {out.stderr.strip()}")
    return json.loads(out.stdout)[0]


# ----------------------------------------------------------------- registries

def registry_host(ref: str) -> str:
    """The registry part of an image reference (``docker://`` prefix allowed)."""
    ref = ref.removeprefix("docker://")
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        return "docker.io"
    return first


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _tls_args(ref: str, insecure: bool, cert_dir: Path | None = None) -> list[str]:
    if insecure and not is_loopback(registry_host(ref)):
        raise ImageError(f"--insecure (plain HTTP, no TLS verification) is only allowed for a loopback registry, "
                         f"not {registry_host(ref)}: give the registry a certificate (and --cert-dir for a private CA)")
    return [f"--tls-verify={'false' if insecure else 'true'}"] + (["--cert-dir", str(cert_dir)] if cert_dir else [])


def _auth_args(ref: str, username: str | None, password: str | None, authfile: Path | None,
               tmp: Path) -> list[str]:
    """podman auth flags. Explicit username/password go into a private auth file (not argv)."""
    if username or password:
        if not (username and password):
            raise ImageError("give both a registry username and password (or neither, to use auth files)")
        path = tmp / "auth.json"
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {registry_host(ref): {"auth": token}}}))
        path.chmod(0o600)
        return ["--authfile", str(path)]
    if authfile:
        return ["--authfile", str(authfile)]
    return []  # podman: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json


def push(image: str, ref: str, echo: Echo, *, insecure: bool = False, username: str | None = None,
         password: str | None = None, authfile: Path | None = None, cert_dir: Path | None = None) -> str:
    """Push a local image to ``ref`` on any OCI registry; returns the pushed digest."""
    podman = require("podman", "mixrec image push")
    with tempfile.TemporaryDirectory(prefix="mixrec-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        _run([podman, "push", *_tls_args(ref, insecure, cert_dir), *_auth_args(ref, username, password, authfile, Path(tmp)),
              "--digestfile", str(digest_file), image, "docker://" + ref.removeprefix("docker://")],
             echo, what="podman push")
        return digest_file.read_text().strip()


def pull(ref: str, echo: Echo, *, insecure: bool = False, username: str | None = None, password: str | None = None,
         authfile: Path | None = None, cert_dir: Path | None = None) -> str:
    podman = require("podman", "mixrec image pull")
    with tempfile.TemporaryDirectory(prefix="mixrec-pull-") as tmp:
        out = _run([podman, "pull", *_tls_args(ref, insecure, cert_dir), *_auth_args(ref, username, password, authfile,
                                                                                Path(tmp)),
                    "docker://" + ref.removeprefix("docker://")], echo, what="podman pull")
    return out.strip().splitlines()[-1]


def remove(image: str, echo: Echo) -> None:
    _run([require("podman", "removing images"), "rmi", image], echo, what="podman rmi")


# ----------------------------------------------------------------- run

@dataclass
class Running:
    name: str
    url: str
    seconds_to_ready: float
    conmon_pid: int


def state_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Env that puts the service's durable state on the volume at STATE_MOUNT (overridable)."""
    return {"MIXREC__STORAGE__URL": f"sqlite:///{STATE_MOUNT}/mixrec.db",
            "MIXREC__STORAGE__MEDIA_DIR": f"{STATE_MOUNT}/media",
            "MIXREC__SERVING__STATE_DIR": f"{STATE_MOUNT}/model", **(extra or {})}


def run_command(ref: str, *, name: str, port: int, state_dir: Path | None, env: Mapping[str, str],
                host: str = "127.0.0.1", podman_opts: Sequence[str] = (), runtime: str | None = None) -> list[str]:
    cmd = [require("podman", "mixrec image run"), *(["--runtime", runtime] if runtime else []), "run", "-d",
           "--name", name,
           "-p", f"{host}:{port}:{CONTAINER_PORT}"]
    if state_dir is not None:
        # :U hands the directory to the image's non-root bentoml user.
        cmd += ["-v", f"{Path(state_dir).resolve()}:{STATE_MOUNT}:U"]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    return [*cmd, *podman_opts, ref]


def wait_ready(name: str, url: str, timeout_s: float) -> None:
    from mixrec.process_tree import poll_http_ready

    podman = require("podman", "mixrec image run")

    def alive() -> None:
        state = subprocess.run([podman, "inspect", "--format", "{{.State.Status}}", name],
                               capture_output=True, text=True).stdout.strip()
        if state not in ("running", "created", "configured", "initialized"):
            raise ImageError(f"container {name} is {state or 'gone'} before /readyz answered:\n{logs(name)}")

    last = poll_http_ready(f"{url}/readyz", timeout_s, alive)
    if last is not None:
        raise ImageError(f"{url}/readyz not ready after {timeout_s:.0f}s ({last}):\n{logs(name)}")


def logs(name: str, tail: int = 60) -> str:
    out = subprocess.run([require("podman", "logs"), "logs", "--tail", str(tail), name], capture_output=True,
                         text=True)
    return (out.stdout + out.stderr)[-6000:]


def run(ref: str, echo: Echo, *, name: str, port: int, state_dir: Path | None = None,
        env: Mapping[str, str] | None = None, host: str = "127.0.0.1", podman_opts: Sequence[str] = (),
        runtime: str | None = None, timeout_s: float = 300) -> Running:
    """Start the image detached and wait until ``/readyz`` answers 200; stop it with ``stop(name)``."""
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _run(run_command(ref, name=name, port=port, state_dir=state_dir, env=state_env(env) if state_dir else dict(env or {}),
                     host=host, podman_opts=podman_opts, runtime=runtime), echo, what="podman run")
    url = f"http://{host}:{port}"
    try:
        wait_ready(name, url, timeout_s)
    except BaseException:
        stop(name, echo)
        raise
    seconds = time.perf_counter() - t0
    pid = subprocess.run([require("podman", "run"), "inspect", "--format", "{{.State.ConmonPid}}", name],
                         capture_output=True, text=True).stdout.strip()
    return Running(name=name, url=url, seconds_to_ready=seconds, conmon_pid=int(pid or 0))


def stop(name: str, echo: Echo, grace_s: int = 10) -> None:
    """Stop and remove the container ``name`` (by its name/id, never by image or pattern)."""
    podman = require("podman", "stopping containers")
    echo(f"$ podman stop -t {grace_s} {name} && podman rm -f {name}")
    subprocess.run([podman, "stop", "-t", str(grace_s), name], capture_output=True)
    subprocess.run([podman, "rm", "-f", name], capture_output=True)
