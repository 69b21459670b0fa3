"""Ship-it figures: image build (cold / warm layer cache), size, push, pull, `run` -> /readyz.

    .venv/bin/python bench/image.py --bento mixrec:<version built with --base local> [--runs 3]

Uses the same code as `mixrec image` (tools/image.py) and a throwaway Debian
docker-registry on a free loopback port (stopped by its pid). Steps:
  wheelhouse  `pip wheel` into an empty cache (skipped with --skip-wheelhouse)
  cold build  `mixrec image build --no-cache` (every step runs; the base image is already there)
  warm build  the same Bento again with the layer cache
  size        `podman image inspect` size, and the compressed bytes pushed (sum of the manifest's layers)
  push        to the loopback registry (plain HTTP), then the local image is removed
  pull        from it, into an empty containers-storage (every layer is downloaded)
  start       `podman run -d` -> /readyz 200, median of --runs (the container is removed each time)
Writes bench/results/image.json and the ``image`` section of BENCHMARKS.md, with `uptime`
before and after. Needs root, buildah, podman, skopeo, docker-registry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = "<!-- image:start -->", "<!-- image:end -->"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(line: str) -> None:
    pass


def main() -> None:
    from tools import image
    from mixrec.process_tree import ProcessTree

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bento", required=True, help="a Bento built with `mixrec build --base local`")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-wheelhouse", action="store_true", help="do not time a wheelhouse from an empty cache")
    ap.add_argument("--runtime", default=os.environ.get("MIXREC_PODMAN_RUNTIME"))
    ap.add_argument("--podman-opts", default=os.environ.get("MIXREC_PODMAN_OPTS", ""))
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()

    version = args.bento.split(":", 1)[1]
    tag = f"localhost/mixrec-bench:{version}"
    res: dict = {"bento": args.bento, "uptime_before": uptime(), "runtime": args.runtime,
                 "podman_opts": args.podman_opts}
    print(res["uptime_before"], flush=True)

    if not args.skip_wheelhouse:
        with tempfile.TemporaryDirectory(prefix="mixrec-wheelhouse-bench-") as tmp:
            t0 = time.perf_counter()
            wh = image.wheelhouse(args.bento, quiet, cache_dir=Path(tmp))
            res["wheelhouse_s"] = time.perf_counter() - t0
            res["wheelhouse_bytes"] = sum(p.stat().st_size for p in wh.iterdir())
            res["wheelhouse_files"] = len(list(wh.glob("*.whl")))
        print("wheelhouse", res["wheelhouse_s"], flush=True)

    cold = image.build(args.bento, tag, quiet, no_cache=True)
    res["cold_build_s"] = cold.seconds
    res["image_bytes"] = cold.size_bytes
    print("cold", cold.seconds, flush=True)
    warm = image.build(args.bento, tag, quiet)
    res["warm_build_s"] = warm.seconds
    print("warm", warm.seconds, flush=True)

    work = Path(tempfile.mkdtemp(prefix="mixrec-bench-registry-"))
    port = free_port()
    (work / "config.yml").write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: "
                                     f"{{rootdirectory: {work / 'data'}}}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(work / "registry.log", "wb") as log:
        registry = ProcessTree(["docker-registry", "serve", str(work / "config.yml")], env=dict(os.environ),
                               output=log)
    try:
        time.sleep(1.0)
        ref = f"127.0.0.1:{port}/mixrec:{version}"
        t0 = time.perf_counter()
        image.push(tag, ref, quiet, insecure=True)
        res["push_s"] = time.perf_counter() - t0
        manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                             capture_output=True, text=True, check=True).stdout)
        res["compressed_bytes"] = sum(int(layer["size"]) for layer in manifest["layers"])
        res["layers"] = len(manifest["layers"])
        subprocess.run(["podman", "rmi", tag], capture_output=True)
        # pull into an empty containers-storage, so that no cached layer stands in for the download
        conf = work / "storage.conf"
        conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/graph"\nrunroot = "{work}/run"\n')
        os.environ["CONTAINERS_STORAGE_CONF"] = str(conf)
        t0 = time.perf_counter()
        image.pull(ref, quiet, insecure=True)
        res["pull_s"] = time.perf_counter() - t0
        opts = args.podman_opts.split()
        starts = []
        for i in range(args.runs):
            name = f"mixrec-bench-{version}-{i}"
            state = work / f"state-{i}"
            running = image.run(ref, quiet, name=name, port=free_port(), state_dir=state, podman_opts=opts,
                                runtime=args.runtime, timeout_s=600)
            starts.append(running.seconds_to_ready)
            image.stop(name, quiet)
            print("start", running.seconds_to_ready, flush=True)
        res["start_s"] = starts
        subprocess.run(["podman", "rmi", ref], capture_output=True)
    finally:
        os.environ.pop("CONTAINERS_STORAGE_CONF", None)
        registry.stop(5)
        shutil.rmtree(work, ignore_errors=True)
    res["uptime_after"] = uptime()
    print(res["uptime_after"], flush=True)

    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/image.json").write_text(json.dumps(res, indent=2))
    write_section(args.out, body(res, " ".join(sys.argv[1:])))


def body(r: dict, argv: str) -> str:
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    wh = (f"| wheelhouse (`pip wheel`, empty cache dir; pip's own download cache warm) | {r['wheelhouse_s']:.0f} s "
          f"({r['wheelhouse_files']} wheels, {gb(r['wheelhouse_bytes'])}) |\n") if "wheelhouse_s" in r else ""
    return f"""## Ship it: OCI image

Command: `MIXREC_PODMAN_RUNTIME={r['runtime']} MIXREC_PODMAN_OPTS="{r['podman_opts']}" .venv/bin/python bench/image.py {argv}`
(Bento built with `mixrec build --base local`: the local Debian base, packages from the wheelhouse;
buildah `--isolation chroot`; a Debian `docker-registry` on loopback; podman with runc.)

Load before: `{r['uptime_before']}`
Load after: `{r['uptime_after']}`
The machine (2 cores) was shared with other engineers' test runs: the figures are wall-clock
under that load.

| step | figure |
|---|---|
{wh}| image build, cold (`--no-cache`: every step; base image present) | {r['cold_build_s']:.0f} s |
| image build, warm layer cache (same Bento again) | {r['warm_build_s']:.0f} s |
| image size (`podman image inspect`) | {gb(r['image_bytes'])} |
| compressed, as pushed ({r['layers']} layers) | {gb(r['compressed_bytes'])} |
| push to a loopback registry (gzip on 2 cores) | {r['push_s']:.0f} s |
| pull from it (into an empty containers-storage) | {r['pull_s']:.0f} s |
| `podman run` -> `/readyz` 200 (image already pulled; tiny demo Bento) | {", ".join(f"{s:.1f}" for s in r['start_s'])} s (median {statistics.median(r['start_s']):.1f} s) |

Where the size goes (`podman run --entrypoint bash IMAGE -c 'du -sm ...'` on an earlier build of the same
requirements): /app/.venv 6441 MB, of which
nvidia-* CUDA libraries 3209 MB, torch 1182 MB, triton 897 MB; the Debian base 213 MB; the
Bento (code, configs, trained model, frozen encoder weights) a few MB. The pinned torch 2.14.1
is a CUDA build: its CUDA side (nvidia libraries + triton + most of torch) is about 5 GB of
the image. A CPU build of torch 2.14.1 cannot be reached from this machine, so a CPU-only
image was not built or measured.
"""


def write_section(path: Path, text: str) -> None:
    block = f"{START}\n{text.rstrip()}\n{END}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    s, e = current.find(START), current.find(END)
    updated = current[:s] + block + current[e + len(END):] if s != -1 and e > s else \
        current.rstrip() + "\n\n" + block + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".benchmarks-", suffix=".md") as f:
        f.write(updated)
    os.replace(f.name, path)


if __name__ == "__main__":
    main()
