"""Peak memory added by decoding attack media inputs, each case in a fresh child process.

    .venv/bin/python bench/media_memory.py
    git -C /work/main worktree add -f /tmp/media-old bd481c0       # an older commit, for a before/after table
    .venv/bin/python bench/media_memory.py --baseline-src /tmp/media-old
    git -C /work/main worktree remove --force /tmp/media-old

Cases are small files that claim a lot: WAV headers with absurd sample rates (the resampling
kernel is the cost), 16-26 Mpx PNG/JPEG images, an 8-channel 384 kHz FLAC of silence, MP4s
of 6000x6000 and 3840x2160 frames. Every input is generated here (in this process, written to a
temporary folder); nothing committed is read. Each case then runs in a child process
(``bench/media_memory.py --case NAME --input FILE``) that

  * sets ``RLIMIT_AS`` (default 8000000 KiB, as ``ulimit -v 8000000``), so a runaway allocation
    ends as MemoryError (or a killed child) instead of taking the machine down;
  * imports mixrec.config, encoders.media, numpy, torch, torchaudio.functional, av, soundfile,
    PIL and reads the input bytes;
  * writes "5" to /proc/self/clear_refs (resets VmHWM to the current RSS), decodes the input
    the way the service does (decode_audio + resample, decode_image, read_keyframes), and
    reports VmHWM - VmRSS-at-reset (peak MB added), the seconds taken and the outcome: ok, or the
    error class and its message (truncated).

``--baseline-src DIR`` also runs every case with DIR first on sys.path (a checkout of an older
commit: its mixrec/ and encoders/ are imported instead of this repository's), giving a
before/after table. Writes bench/results/media_memory.json and replaces the ``media-memory``
section of BENCHMARKS.md (appended at the end when its markers are absent).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "media_memory.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- media-memory:start -->", "<!-- media-memory:end -->"
AS_LIMIT_KB = 8_000_000  # the child's address-space limit, as `ulimit -v 8000000`
MESSAGE_CHARS = 160
RESULT_TAG = "MEDIA_MEMORY_RESULT "

# name -> (what the input is, how the child decodes it). Same cases as the original /tmp/mb/all.sh.
CASES: dict[str, tuple[str, str]] = {
    "wav4001": ("WAV, 4001 Hz (prime), 100 samples, resampled to 16 kHz", "audio16k"),
    "wav1000003": ("WAV, 1000003 Hz (prime), 20000 samples, resampled to 16 kHz", "audio16k"),
    "wav2147483647": ("WAV, 2147483647 Hz (2^31-1) in the header, 100 samples, resampled to 16 kHz", "audio16k"),
    "png40m": ("PNG 6320x6320 RGB, one colour (40 Mpx, just under max_image_pixels)", "image"),
    "mp46000": ("MP4 (mpeg4) 6000x6000, 2 frames of grey, 4 keyframes asked", "keyframes"),
    "img_RGB_4096": ("PNG 4096x4096 RGB, patterned", "image"),
    "img_RGBA_4096": ("PNG 4096x4096 RGBA, patterned", "image"),
    "img_L_4096": ("PNG 4096x4096 L (greyscale), patterned", "image"),
    "img_P_4096": ("PNG 4096x4096 P (palette), patterned", "image"),
    "img_RGB_6320_JPEG": ("JPEG 6320x6320 RGB, patterned", "image"),
    "flac8_384000_30": ("FLAC 8 channels, 384 kHz, 30 s of silence, resampled to 48 kHz", "audio48k"),
    "mp43840x2160": ("MP4 (mpeg4) 3840x2160, 2 frames of grey, 4 keyframes asked", "keyframes"),
}


# ================================================================ inputs (parent process)

def _wav(sr: int, n: int, channels: int = 1) -> bytes:
    import numpy as np

    data = (np.sin(np.arange(n * channels) / 7) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, sr, (sr * channels * 2) & 0xFFFFFFFF, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_flat(side: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (side, side), 128 if mode == "L" else (128, 60, 20)).save(buf, format="PNG")
    return buf.getvalue()


def _patterned(mode: str, side: int, fmt: str) -> bytes:
    import numpy as np
    from PIL import Image

    yy, xx = np.indices((side, side))
    rgb = np.stack([(xx * 7 + yy) % 256, (yy * 3) % 256, (xx ^ yy) & 255], -1).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    buf = io.BytesIO()
    if fmt == "PNG":
        im.save(buf, format=fmt, compress_level=1)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def _mp4(width: int, height: int, frames: int = 2) -> bytes:
    from fractions import Fraction

    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame(width, height, "yuv420p")
            for p in f.planes:
                p.update(bytes([128]) * p.buffer_size)
            f.pts, f.time_base = i, Fraction(1, 10)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return buf.getvalue()


def _flac(channels: int, sr: int, seconds: int) -> bytes:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros((sr * seconds, channels), np.int16), sr, format="FLAC")
    return buf.getvalue()


def make_input(case: str) -> bytes:
    if case.startswith("wav"):
        sr = int(case[3:])
        return _wav(sr, max(100, int(sr * 0.02)) if sr < 10**8 else 100)
    if case == "png40m":
        return _png_flat(6320)
    if case.startswith("img_"):  # img_MODE_SIDE[_FMT]
        _, mode, side, *fmt = case.split("_")
        return _patterned(mode, int(side), fmt[0] if fmt else "PNG")
    if case.startswith("flac"):  # flacCHANNELS_RATE_SECONDS
        ch, sr, secs = map(int, case[4:].split("_"))
        return _flac(ch, sr, secs)
    if case.startswith("mp4"):  # mp4SIDE or mp4WxH
        w, *h = case[3:].split("x")
        return _mp4(int(w), int(h[0]) if h else int(w))
    raise ValueError(f"unknown case {case}")


# ================================================================ one measurement (child process)

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(case: str, input_path: str, src: str, as_limit_kb: int) -> None:
    limit = as_limit_kb * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, src)
    import av  # noqa: F401  (imported before the reset: import cost is not the decoder's)
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import soundfile  # noqa: F401
    import torch  # noqa: F401
    import torchaudio.functional  # noqa: F401

    import mixrec.config
    from encoders import media

    for mod in (mixrec.config, media):  # the editable install must not shadow --baseline-src
        if not Path(mod.__file__).resolve().is_relative_to(Path(src).resolve()):
            raise SystemExit(f"{mod.__name__} imported from {mod.__file__}, not from {src}")
    limits = mixrec.config.LimitsConfig()
    data = Path(input_path).read_bytes()
    op = CASES[case][1]
    if op == "audio16k":
        def run():
            return media.resample(media.decode_audio(data, limits), 16000)
    elif op == "audio48k":
        def run():
            return media.resample(media.decode_audio(data, limits), 48000)
    elif op == "image":
        def run():
            return media.decode_image(data, limits)
    else:
        def run():
            return media.read_keyframes(data, 4, limits, 600)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    base_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    try:
        run()
        outcome = "ok"
    except Exception as e:  # noqa: BLE001 - the outcome is what we report
        outcome = f"{type(e).__name__}: {str(e)[:MESSAGE_CHARS]}"
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM")
    print(RESULT_TAG + json.dumps({"peak_mb": round((peak_kb - base_kb) / 1024, 1), "seconds": round(seconds, 3),
                                   "outcome": outcome, "rss_at_reset_mb": round(base_kb / 1024, 1),
                                   "media_file": media.__file__}), flush=True)


# ================================================================ driver (parent process)

def run_case(case: str, input_path: Path, src: Path, as_limit_kb: int, timeout_s: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--input", str(input_path),
           "--src", str(src), "--as-limit-kb", str(as_limit_kb)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(src))
    except subprocess.TimeoutExpired:
        return {"peak_mb": None, "seconds": round(time.monotonic() - t0, 1), "outcome": f"timeout after {timeout_s:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    how = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    tail = (p.stderr.strip().splitlines() or [""])[-1][:MESSAGE_CHARS]
    return {"peak_mb": None, "seconds": round(time.monotonic() - t0, 1), "outcome": f"child {how}: {tail}".rstrip(": ")}


def _cell(r: dict | None) -> tuple[str, str, str]:
    if r is None:
        return "", "", ""
    mb = "—" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
    return mb, f"{r['seconds']:.2f}", r["outcome"].replace("|", "\\|").replace("\n", " ")


def table(res: dict) -> str:
    before = res.get("baseline_src")
    if before:
        lines = ["| case | input | before: peak MB | before: s | before: outcome | after: peak MB | after: s | after: outcome |",
                 "|---|---|---:|---:|---|---:|---:|---|"]
    else:
        lines = ["| case | input | peak MB | s | outcome |", "|---|---|---:|---:|---|"]
    for case, c in res["cases"].items():
        cells = (_cell(c.get("before")) if before else ()) + _cell(c["after"])
        lines.append(f"| {case} | {c['description']} ({c['input_bytes']:,} bytes) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(res: dict) -> None:
    la0, la1 = res["load_average_before"], res["load_average_after"]
    base = res.get("baseline_src")
    intro = (f"Before = `{base['path']}` at {base['commit']}, after = this checkout at {res['commit']} "
             "(with its uncommitted changes, if any). " if base else "")
    lines = [START, "## Media decoding: peak memory on attack inputs", "",
             f"`{res['command']}` — {res['machine']}, {res['date']}, {res['wall_s']:.0f} s wall; load average "
             f"(1/5/15 min) {la0[0]}/{la0[1]}/{la0[2]} before, {la1[0]}/{la1[1]}/{la1[2]} after.", "",
             intro + "Each case runs in a fresh child process limited to "
             f"{res['as_limit_kb']:,} KiB of address space (`RLIMIT_AS`, as `ulimit -v {res['as_limit_kb']}`); "
             "peak MB = VmHWM minus RSS after imports and input read (VmHWM reset through /proc/self/clear_refs), "
             "so it is the memory the decode itself added. Inputs are generated by the script; default "
             "`LimitsConfig()` of the imported code.", "",
             table(res), "",
             "An allocation error (`MemoryError`, torch's `can't allocate memory`) means the decode asked for "
             "more than the address-space limit: the peak MB shown is only what it got before that request; "
             "without the limit it would have tried to take it all. "
             "Figures on a 2-core machine shared with other work: seconds are noisy, peak MB is not. "
             "Details: bench/results/media_memory.json.", END]
    block = "\n".join(lines)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"  # re-read: others edit it too
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def _commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="checkout of an older commit: also run every case with it first on sys.path")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE",
                    help=f"subset of cases (default all: {' '.join(CASES)})")
    ap.add_argument("--as-limit-kb", type=int, default=AS_LIMIT_KB, help="child RLIMIT_AS in KiB (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child (default %(default)s)")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/results or BENCHMARKS.md")
    ap.add_argument("--markdown-only", action="store_true",
                    help="only re-render the BENCHMARKS.md section from bench/results/media_memory.json")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--src", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        child(args.case, args.input, args.src, args.as_limit_kb)
        return
    if args.markdown_only:
        write_markdown(json.loads(RESULTS.read_text()))
        return
    if args.baseline_src is not None and not (args.baseline_src / "encoders" / "media.py").is_file():
        ap.error(f"--baseline-src {args.baseline_src}: no encoders/media.py there")

    t_start = time.monotonic()
    res: dict = {"command": ".venv/bin/python bench/media_memory.py " + " ".join(sys.argv[1:]),
                 "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                 "python": platform.python_version(), "commit": _commit(ROOT), "as_limit_kb": args.as_limit_kb,
                 "load_average_before": [round(x, 2) for x in os.getloadavg()], "cases": {}}
    if args.baseline_src is not None:
        res["baseline_src"] = {"path": str(args.baseline_src), "commit": _commit(args.baseline_src)}
    with tempfile.TemporaryDirectory(prefix="mixrec-media-memory-") as tmp:
        for case in args.cases:
            path = Path(tmp) / case
            path.write_bytes(make_input(case))
            entry = {"description": CASES[case][0], "input_bytes": path.stat().st_size}
            runs = ([("before", args.baseline_src)] if args.baseline_src is not None else []) + [("after", ROOT)]
            for label, src in runs:
                entry[label] = run_case(case, path, src, args.as_limit_kb, args.timeout)
                r = entry[label]
                mb = "-" if r["peak_mb"] is None else f"+{r['peak_mb']:.0f} MB"
                print(f"{case:18s} {label:6s} {mb:>10s} {r['seconds']:8.2f} s  {r['outcome']}", flush=True)
            path.unlink()
            res["cases"][case] = entry
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print("\n" + table(res))
    print(f"wall {res['wall_s']} s, load average {res['load_average_before']} -> {res['load_average_after']}")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
        write_markdown(res)
        print(f"wrote {RESULTS.relative_to(ROOT)} and the media-memory section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
