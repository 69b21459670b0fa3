"""Encoder throughput: items/s per encoder of a profile at batch sizes 1, 8, 32; text on a catalogue.

    .venv/bin/python bench/encoders.py --config configs/offline.yaml --repeats 3
    .venv/bin/python bench/encoders.py --catalogue-only --catalogue-items 10000

Median of ``--repeats`` timed runs after one warm-up, on CPU (float32) and,
when torch sees a GPU, on CUDA (fp16). Writes bench/results/encoders.json and
replaces the ``encoders`` section of BENCHMARKS.md.

The catalogue phase encodes a 10k-item MovieLens-style catalogue (titles, genres and a few tags;
built from ``$MIXREC_MOVIELENS_DIR``/../shared/data/ml-100k u.item when present, else synthetic)
through ``Encoder.encode`` as ``mixrec encode`` does, with and without length-sorted chunks, in
one run, against the encoder's best batch throughput on short texts of one length (no padding):
items/s and tokens/s. Writes bench/results/encoders_catalogue.json (no BENCHMARKS.md edit).
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


def measure(cfg, inputs, repeats: int, device: str, runtimes: tuple[str, ...] = ("torch",)) -> tuple[dict, dict]:
    """items/s per encoder (and per runtime: torch, ONNX Runtime on the CPU) at each batch size."""
    from encoders.registry import build_encoder
    from encoders.video import VideoEncoder

    encs = {}
    for m in ("text", "image", "audio"):
        for rt in runtimes if device == "cpu" else ("torch",):
            section = getattr(cfg.encoders, m)
            section = section.model_copy(update={"device": device, "batch_size": max(BATCH_SIZES),
                                                 "options": {**section.options, "runtime": rt}})
            encs[(m, rt)] = build_encoder(section, cfg.limits)
    encs[("video", "torch")] = VideoEncoder.from_config(cfg, encs[("image", "torch")], encs[("audio", "torch")])
    results, described = {}, {}
    for (m, rt), enc in encs.items():
        name = "video" if m == "video" else f"{m}:{enc.describe()['kind']}:{enc.describe()['model']} ({rt})"
        described[name] = enc.describe() if m != "video" else {"keyframes": enc.keyframes}
        results[name] = {}
        for bs in BATCH_SIZES:
            results[name][str(bs)] = {"items_per_s": round(_time(enc.encode, inputs[m][:bs], repeats), 2)}
            print(f"  {device:4s} {name:58s} batch {bs:3d}: {results[name][str(bs)]['items_per_s']:9.1f} items/s",
                  flush=True)
    return results, described


# ---------------------------------------------------------------------------------------------- catalogue
TAGS = ("classic", "twist ending", "based on a book", "cult film", "great soundtrack", "visually stunning",
        "dark", "funny", "quirky", "feel-good", "slow", "atmospheric", "true story", "remake", "oscar",
        "black and white", "violent", "romantic", "thought-provoking", "family")


def movielens_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n MovieLens-style item texts (``Item.text()``: title. description. tags: genres + a few user tags)."""
    from mixrec.catalog import Item

    rng = np.random.default_rng(seed)
    try:
        from tools.datasets.movielens import load_movielens

        movies = load_movielens().items
        source = "ml-100k u.item"
    except (OSError, ValueError):
        genres = ("Action", "Comedy", "Drama", "Thriller", "Romance", "Sci-Fi", "Animation", "Documentary")
        movies = [Item(item_id=str(i), type="video", title=f"Movie {i} ({1950 + i % 50})",
                       description=f"A {g.lower()} movie from {1950 + i % 50}", tags=[g])
                  for i, g in zip(range(1682), rng.choice(genres, 1682))]
        source = "synthetic (ml-100k not found)"
    out = []
    for i in range(n):
        m = movies[i % len(movies)]
        extra = list(rng.choice(TAGS, int(rng.integers(0, 5)), replace=False))
        out.append(m.model_copy(update={"tags": [*m.tags, *extra]}).text())
    return out, source


def _rate(fn, items: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return items / statistics.median(runs)


def measure_catalogue(cfg, n: int, repeats: int, runtimes: tuple[str, ...] = ("torch",)) -> dict:
    """Per runtime: best batch throughput on short same-length texts vs the whole catalogue, sorted and not."""
    from encoders.registry import build_encoder

    texts, source = movielens_texts(n)
    out = {"command": " ".join([".venv/bin/python bench/encoders.py", *sys.argv[1:]]), "source": source, "items": n,
           "torch_threads": torch.get_num_threads(), "runtimes": {}}
    for rt in runtimes:
        section = cfg.encoders.text.model_copy(update={"device": "cpu",
                                                       "options": {**cfg.encoders.text.options, "runtime": rt}})
        enc = build_encoder(section, cfg.limits)
        lengths = np.array([len(x) for x in enc.tokenizer(texts, truncation=True, max_length=enc.max_length)["input_ids"]])
        tokens = int(lengths.sum())
        out.update(tokens=tokens, batch_size=enc.batch_size, token_length={
            "min": int(lengths.min()), "median": int(np.median(lengths)), "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max())})
        # "Short inputs" for the best batch: texts of the catalogue's median token length, so no padding at all.
        short = [t for t, k in zip(texts, lengths) if k == int(np.median(lengths))]
        best = {}
        for bs in (8, 32, 64, 128):
            batch = (short * (bs // max(1, len(short)) + 1))[:bs]
            enc.encode(batch)
            best[str(bs)] = round(_rate(lambda: enc.encode(batch), bs, max(3, repeats)), 1)
            print(f"  {rt:5s} short texts ({int(np.median(lengths))} tokens), batch {bs:3d}: {best[str(bs)]:8.1f} items/s",
                  flush=True)
        best_rate = max(best.values())
        cat = {}
        for label, sort in (("unsorted", False), ("length_sorted", True)):
            enc.sort_by_length = sort
            rate = _rate(lambda: enc.encode(texts), n, repeats)
            cat[label] = {"items_per_s": round(rate, 1), "tokens_per_s": round(rate * tokens / n, 1),
                          "ratio_to_best_batch": round(rate / best_rate, 3)}
            print(f"  {rt:5s} catalogue {label:14s}: {rate:8.1f} items/s, {rate * tokens / n:9.1f} tokens/s, "
                  f"{rate / best_rate:.2f} of the best batch", flush=True)
        out["runtimes"][rt] = {"best_batch_items_per_s": best, "best": best_rate, "catalogue": cat}
        del enc
    return out


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
    ap.add_argument("--catalogue-items", type=int, default=10_000)
    ap.add_argument("--catalogue-only", action="store_true", help="only the text catalogue phase")
    ap.add_argument("--runtimes", default="torch,onnx", help="CPU runtimes to compare (options.runtime)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (ONNX Runtime takes the same); default torch's")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    if args.catalogue_only:
        load = [round(x, 2) for x in os.getloadavg()]
        result = measure_catalogue(cfg, args.catalogue_items, args.repeats, tuple(args.runtimes.split(",")))
        result["load_average_before"], result["load_average_after"] = load, [round(x, 2) for x in os.getloadavg()]
        out = Path(args.out).with_name("encoders_catalogue.json")
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    machine = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "load_average_1m": round(os.getloadavg()[0], 2)}  # shared machines: context for noisy figures
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _inputs(Path(tmp), max(BATCH_SIZES))
        results, described = {}, {}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            results[device], described[device] = measure(cfg, inputs, args.repeats, device,
                                                         tuple(args.runtimes.split(",")))

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
