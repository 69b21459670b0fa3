"""Encoder throughput: items/s per encoder of a profile at batch sizes 1, 8, 32.

    .venv/bin/python bench/encoders.py --config configs/offline.yaml --repeats 3

Median of ``--repeats`` timed runs after one warm-up, on CPU (float32) and,
when torch sees a GPU, on CUDA (fp16). Writes bench/results/encoders.json and
replaces the ``encoders`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BATCH_SIZES = (1, 8, 32)
START, END = "<!-- encoders:start -->", "<!-- encoders:end -->"


def _inputs(tmp: Path, n: int) -> dict[str, list]:
    """Synthetic media: n distinct texts, PNGs, 3 s WAVs and 2 s MP4s (keyframes + audio track)."""
    import soundfile as sf
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_mp4

    rng = np.random.default_rng(0)
    texts = [f"item {i}: a {c} {w} for everyday use, light and durable"
             for i, (c, w) in enumerate(zip(rng.choice(["red", "blue", "green"], n), rng.choice(["lamp", "song", "clip"], n)))]
    images, clips = [], []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append(buf.getvalue())
        buf = io.BytesIO()
        sf.write(buf, 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * np.arange(48_000) / 16_000), 16_000, format="WAV")
        clips.append(buf.getvalue())
    videos = [write_mp4(tmp / f"v{i}.mp4", seconds=2.0, audio_freq=300 + 10 * i) for i in range(min(n, 8))]
    videos = [videos[i % len(videos)] for i in range(n)]
    return {"text": texts, "image": images, "audio": clips, "video": videos}


def _time(fn, batch, repeats: int) -> float:
    fn(batch)  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        runs.append(time.perf_counter() - t0)
    return len(batch) / statistics.median(runs)


def measure(cfg, inputs, repeats: int, device: str) -> tuple[dict, dict]:
    from encoders.registry import build_encoder
    from encoders.video import VideoEncoder

    encs = {}
    for m in ("text", "image", "audio"):
        section = getattr(cfg.encoders, m).model_copy(update={"device": device, "batch_size": max(BATCH_SIZES)})
        encs[m] = build_encoder(section, cfg.limits)
    encs["video"] = VideoEncoder.from_config(cfg, encs["image"], encs["audio"])
    results, described = {}, {}
    for m, enc in encs.items():
        name = "video" if m == "video" else f"{m}:{enc.describe()['kind']}:{enc.describe()['model']}"
        described[name] = enc.describe() if m != "video" else {"keyframes": enc.keyframes}
        results[name] = {}
        for bs in BATCH_SIZES:
            results[name][str(bs)] = {"items_per_s": round(_time(enc.encode, inputs[m][:bs], repeats), 2)}
            print(f"  {device:4s} {name:50s} batch {bs:3d}: {results[name][str(bs)]['items_per_s']:9.1f} items/s",
                  flush=True)
    return results, described


def table(results: dict) -> str:
    lines = ["| device | encoder | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " |",
             "|---|---|" + "---:|" * len(BATCH_SIZES)]
    for device, per_enc in results.items():
        for name, per_bs in per_enc.items():
            cells = " | ".join(f"{per_bs[str(b)]['items_per_s']:.1f}" for b in BATCH_SIZES)
            lines.append(f"| {device} | {name} | {cells} |")
    return "\n".join(lines)


def write_benchmarks_md(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    from mixrec.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "offline.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "encoders.json"))
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()

    cfg = load_config(args.config)
    machine = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "load_average_1m": round(os.getloadavg()[0], 2)}  # shared machines: context for noisy figures
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _inputs(Path(tmp), max(BATCH_SIZES))
        results, described = {}, {}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            results[device], described[device] = measure(cfg, inputs, args.repeats, device)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": str(Path(args.config)), "repeats": args.repeats, "machine": machine,
               "results": results, "encoders": described,
               "inputs": "224x224 PNG images, 3 s 16 kHz WAV clips, 2 s 64x48 MP4 videos with an AAC track"}
    out.write_text(json.dumps(payload, indent=2))
    md = table(results)
    print("\n" + md)
    rel = os.path.relpath(args.config, ROOT)
    body = (f"## Encoder throughput (items/s, median of {args.repeats} runs)\n\n"
            f"Command: `.venv/bin/python bench/encoders.py --config {rel} --repeats {args.repeats}`\n\n"
            f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, "
            f"GPU: {machine['cuda'] or 'none'}, load average {machine['load_average_1m']} at start. CPU runs float32; CUDA runs fp16 when `fp16: true`.\n"
            f"Inputs: {payload['inputs']}; video = {cfg.video.keyframes} keyframes + audio track per item.\n"
            f"Image and audio encoders of the offline profile are small **untrained** models: "
            f"these figures measure the code path, not a production model.\n\n{md}")
    write_benchmarks_md(Path(args.markdown), body)


if __name__ == "__main__":
    main()
