"""The attack classes of the "Trust" issue, replayed against a served Recommender (bench/robustness.py).

Each class sends a bounded list of hostile requests to a running ``bentoml serve`` on
127.0.0.1 and reports: requests sent, the status codes seen, 5xx, the requests whose
status was not one of those expected (``unexpected``, with the first bytes of the answer),
error bodies not in the one shape ``{"error": {"status", "code", "message"}}``, and the
peak RSS of every service process of the Bento during the class (sampled every 50 ms
in a thread; per service the sum over its workers; baseline before, peak during, delta).

    audio_sample_rate    WAV headers claiming 4001 Hz, 1,000,003 Hz, 2,147,483,647 Hz, 1000 channels
    decoded_size         ~40 Mpx PNG (small bytes), 4 of them in one query, a 40 Mpx JPEG, a 6000x6000 MP4
    streamed_body        chunked body of 3x the cap, Transfer-Encoding + small Content-Length, huge Content-Length
    metrics_cardinality  1,000 POSTs to random paths; /metrics size and series naming a random path
    echo                 ten unknown 1 MB ids (and 1,000 unknown 200-char ids) -> size of the answer
    wrong_status         an integer too large for a float in mix, 2,000-deep nested tags/JSON
    unsupported_media    text as image, MP4 as image, JPEG as audio -> 415
    cross_site           text/plain, urlencoded and multipart writes with a foreign Origin / Sec-Fetch-Site
    lost_writes          forget_user then new user, delete + re-add, concurrent forget_user + update_model

Payloads are generated here (the largest, a 6000x6000 MP4, in ~2 s) and never written to disk.
Nothing here fixes anything: it measures.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import select
import socket
import statistics
import struct
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import httpx
import psutil

SERVICES = ("Recommender", "TextEncoder", "ImageEncoder", "AudioEncoder")
MB = 1024 * 1024
EVIL = "http://evil.example"
SMALL_BODY_BYTES = 4096  # an error answer longer than this echoes what it was sent
RSS_BOUND_MB = 256.0  # per service and class: the peak RSS over the baseline must stay under this
REQUEST_TIMEOUT_S = 120.0


# ================================================================ per-service RSS

def service_processes(root_pid: int) -> dict[str, list[psutil.Process]]:
    """The Bento's worker processes by service name, read from ``--service-name X`` in their command line."""
    out: dict[str, list[psutil.Process]] = {}
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in children:
        try:
            cmd = p.cmdline()  # /proc/<pid>/cmdline
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if "--service-name" in cmd and cmd.index("--service-name") + 1 < len(cmd):
            out.setdefault(cmd[cmd.index("--service-name") + 1], []).append(p)
    return out


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


class RssSampler:
    """Samples the summed RSS of each service's workers every ``interval_s`` in a daemon thread.

    The process list is re-read every second, so a worker that circus restarts (an OOM kill,
    a crash) is counted as a restart and its successor is sampled too.
    """

    def __init__(self, root_pid: int, interval_s: float = 0.05) -> None:
        self.root_pid, self.interval_s = root_pid, interval_s
        self.procs = service_processes(root_pid)
        self.first_pids = {s: {p.pid for p in ps} for s, ps in self.procs.items()}
        self.seen_pids = {s: set(v) for s, v in self.first_pids.items()}
        self.baseline = {s: _rss(ps) for s, ps in self.procs.items()}
        self.peak = dict(self.baseline)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        refreshed = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 1.0:
                self.procs = service_processes(self.root_pid) or self.procs
                for s, ps in self.procs.items():
                    self.seen_pids.setdefault(s, set()).update(p.pid for p in ps)
                refreshed = time.monotonic()
            for s, ps in self.procs.items():
                v = _rss(ps)
                if v > self.peak.get(s, 0):
                    self.peak[s] = v
            self.samples += 1
            self._stop.wait(self.interval_s)

    def report(self) -> dict:
        end = {s: _rss(ps) for s, ps in service_processes(self.root_pid).items()}
        out = {}
        for s in sorted(set(self.baseline) | set(self.peak), key=lambda n: (n not in SERVICES, SERVICES.index(n)
                                                                           if n in SERVICES else 0, n)):
            base, peak = self.baseline.get(s, 0), self.peak.get(s, 0)
            out[s] = {"workers": len(self.first_pids.get(s, ())), "baseline_mb": round(base / MB, 1),
                      "peak_mb": round(peak / MB, 1), "delta_mb": round((peak - base) / MB, 1),
                      "after_mb": round(end.get(s, 0) / MB, 1),
                      "worker_restarts": len(self.seen_pids.get(s, set()) - self.first_pids.get(s, set()))}
        out["_samples"] = self.samples
        return out


# ================================================================ sending and recording

def is_shaped(text: str) -> bool:
    try:
        err = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return False
    return (isinstance(err, dict) and isinstance(err.get("status"), int) and isinstance(err.get("code"), str)
            and isinstance(err.get("message"), str))


class Probe:
    """Sends labelled requests with an expected status set; records what came back. Bounded by a deadline."""

    def __init__(self, url: str, budget_s: float, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=timeout_s)
        self.deadline = time.monotonic() + budget_s
        self.statuses: Counter = Counter()
        self.requests = 0
        self.skipped: list[str] = []
        self.unexpected: list[dict] = []
        self.unshaped: list[str] = []
        self.log: list[dict] = []
        self.max_error_bytes = 0

    def close(self) -> None:
        self.client.close()

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def record(self, label: str, status, expect, body: bytes | str = b"", ms: float = 0.0, keep: bool = True) -> None:
        self.requests += 1
        self.statuses[str(status)] += 1
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        nbytes = len(body)
        if isinstance(status, int) and status >= 400:
            self.max_error_bytes = max(self.max_error_bytes, nbytes)
            if not is_shaped(text) and len(self.unshaped) < 20:
                self.unshaped.append(f"{label}: {status} {text[:160]!r}")
        if expect is not None and status not in expect:
            self.unexpected.append({"request": label, "status": status, "expected": list(expect),
                                    "answer": text[:240]})
        if keep:
            self.log.append({"request": label, "status": status, "ms": round(ms, 1), "response_bytes": nbytes})

    def send(self, label: str, method: str, path: str, expect=None, keep: bool = True, **kw) -> httpx.Response | None:
        if self.out_of_time():
            self.skipped.append(label)
            return None
        t0 = time.monotonic()
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            self.record(label, type(e).__name__, expect, str(e).encode(), (time.monotonic() - t0) * 1000, keep)
            return None
        self.record(label, r.status_code, expect, r.content, (time.monotonic() - t0) * 1000, keep)
        return r

    def post(self, label: str, path: str, expect=None, **kw) -> httpx.Response | None:
        return self.send(label, "POST", path, expect, **kw)

    def summary(self) -> dict:
        five = sum(n for s, n in self.statuses.items() if s.isdigit() and int(s) >= 500)
        no_answer = sum(n for s, n in self.statuses.items() if not s.isdigit())
        return {"requests": self.requests, "statuses": dict(sorted(self.statuses.items())), "5xx": five,
                "no_answer": no_answer, "unexpected": self.unexpected[:25], "unexpected_count": len(self.unexpected),
                "unshaped_errors": self.unshaped, "max_error_body_bytes": self.max_error_bytes,
                "skipped_out_of_time": self.skipped}


# ================================================================ payload builders

def wav_header_bytes(sample_rate: int, channels: int, frames: int, bits: int = 16) -> bytes:
    """A PCM WAV written by hand so that its header can claim anything (rates a writer would refuse)."""
    block = channels * bits // 8
    data = b"\x00" * (frames * block)
    byte_rate = (sample_rate * block) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate & 0xFFFFFFFF, byte_rate, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def flat_png(width: int, height: int, rgb=(30, 140, 90)) -> bytes:
    """A real, fully decodable RGB PNG of one colour: megapixels in a few hundred KB (streamed through zlib)."""
    row = b"\x00" + bytes(rgb) * width
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def flat_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 60, 40)).save(buf, format="JPEG", quality=50)
    return buf.getvalue()


def small_png(size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (20, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def flat_mp4(width: int, height: int, frames: int = 3) -> bytes:
    """A few frames of one colour, mpeg4 codec in MP4 (6000x6000: ~0.4 MB, ~2 s to encode)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        fr = av.VideoFrame(width, height, "yuv420p")
        for plane, v in zip(fr.planes, (90, 128, 128)):
            plane.update(bytes([v]) * plane.buffer_size)
        for i in range(frames):
            fr.pts = i
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def multipart_values(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    """A multipart body of plain values only (what an HTML form or curl -F k=v sends)."""
    boundary = "mixrec-attack-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def _item_form(item_id: str, kind: str = "product") -> dict:
    return {"item_id": item_id, "type": kind, "title": "attack probe"}


# ================================================================ raw sockets (framings httpx will not send)

def _addr(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    assert u.hostname == "127.0.0.1", "attacks run on loopback only"
    return u.hostname, u.port


def _read_response(sock: socket.socket, timeout_s: float = 30.0) -> tuple[int | str, bytes]:
    """(status, body) of the first response on ``sock`` (read until close or the declared length)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/"):
            return ("closed_without_answer" if not data else "not_http"), data[:200]
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), None)
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body
    except (socket.timeout, ConnectionError) as e:
        if data.startswith(b"HTTP/"):
            return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]
        return type(e).__name__, b""


def raw_request(url: str, head: bytes, body_chunks, timeout_s: float = 60.0) -> dict:
    """Send ``head`` then ``body_chunks`` (an iterable of bytes) and stop sending as soon as the server
    answers or closes; returns the status, the answer and how many body bytes went out."""
    sock = socket.create_connection(_addr(url), timeout=timeout_s)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:  # the server answered (or closed) before the body ended
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body = _read_response(sock, timeout_s)
    finally:
        sock.close()
    return {"status": status, "body": body, "body_bytes_sent": sent}


def _chunked(total: int, chunk: int = MB):
    piece = b"0" * chunk
    frame = f"{chunk:x}\r\n".encode() + piece + b"\r\n"
    for _ in range(total // chunk):
        yield frame
    yield b"0\r\n\r\n"


# ================================================================ the classes

def audio_sample_rate(p: Probe, ctx: dict) -> dict:
    """WAV headers whose sample rate or channel count makes decoding/resampling expensive."""
    payloads = {
        "4001Hz": (wav_header_bytes(4001, 1, 100), (200, 400)),  # 244 bytes; inside 4000..384000: accept or 400
        "1000003Hz": (wav_header_bytes(1_000_003, 1, 5_500), (400,)),  # ~11 KB, over the max rate
        "2147483647Hz": (wav_header_bytes(2_147_483_647, 1, 5_500), (400,)),
        "1000ch": (wav_header_bytes(16_000, 1000, 10), (400,)),  # 20 KB, over max channels
    }
    sizes = {}
    n = 0
    for name, (data, expect) in payloads.items():
        sizes[name] = len(data)
        p.post(f"recommend_by_query audio file {name}", "/recommend_by_query", expect,
               files={"audio": (f"{name}.wav", data, "audio/wav")})
        p.post(f"recommend_by_query audio_b64 {name}", "/recommend_by_query", expect, json={"audio_b64": [b64(data)]})
        n += 1
        p.post(f"add_item audio {name}", "/add_item", expect, data=_item_form(f"atk-wav-{name}-{ctx['run']}", "audio"),
               files={"audio": (f"{name}.wav", data, "audio/wav")})
    return {"payload_bytes": sizes}


def decoded_size(p: Probe, ctx: dict) -> dict:
    """Few bytes, many pixels: a 39.9 Mpx PNG, four of them in one query, a 39.9 Mpx JPEG, a 6000x6000 MP4."""
    t0 = time.monotonic()
    side = 6316  # 39.9 Mpx: just under max_image_pixels (40 M)
    png_big = flat_png(side, side)
    jpg_big = flat_jpeg(side, side)
    mp4_big = flat_mp4(6000, 6000)
    gen_s = time.monotonic() - t0
    big = (400, 413)
    p.post("recommend_by_query image 39.9 Mpx PNG", "/recommend_by_query", big,
           files={"image": ("big.png", png_big, "image/png")})
    p.post("recommend_by_query 4 x 39.9 Mpx PNG", "/recommend_by_query", big,
           files=[("image", (f"big{i}.png", png_big, "image/png")) for i in range(4)])
    p.post("recommend_by_query image_b64 4 x 39.9 Mpx PNG", "/recommend_by_query", big,
           json={"image_b64": [b64(png_big)] * 4})
    p.post("add_item image 39.9 Mpx PNG", "/add_item", big, data=_item_form(f"atk-png-{ctx['run']}"),
           files={"image": ("big.png", png_big, "image/png")})
    # JPEG: draft mode decodes at 1/8 scale, so the budget allows it (200) or refuses it (4xx); never a 5xx
    p.post("recommend_by_query image 39.9 Mpx JPEG", "/recommend_by_query", (200, 400, 413),
           files={"image": ("big.jpg", jpg_big, "image/jpeg")})
    p.post("add_item image 39.9 Mpx JPEG", "/add_item", (200, 400, 413), data=_item_form(f"atk-jpg-{ctx['run']}"),
           files={"image": ("big.jpg", jpg_big, "image/jpeg")})
    p.post("add_item video 6000x6000 MP4", "/add_item", big, data=_item_form(f"atk-mp4-{ctx['run']}", "video"),
           files={"video": ("big.mp4", mp4_big, "video/mp4")})
    p.post("add_items video_b64 6000x6000 MP4", "/add_items", big,
           json={"items": [{**_item_form(f"atk-mp4b-{ctx['run']}", "video"), "video_b64": b64(mp4_big)}]})
    slow = sorted((e for e in p.log), key=lambda e: -e["ms"])[:3]
    return {"payload_bytes": {"png_39.9Mpx": len(png_big), "jpeg_39.9Mpx": len(jpg_big), "mp4_6000x6000": len(mp4_big)},
            "generation_s": round(gen_s, 1), "slowest": slow}


def streamed_body(p: Probe, ctx: dict) -> dict:
    """Bodies that lie about (or hide) their length: each must be refused without being buffered whole."""
    cap = ctx["max_body_bytes"]
    total = 3 * cap
    url = p.url
    host = urlsplit(url).netloc
    out: dict = {"cap_bytes": cap, "chunked_body_bytes": total}

    # 1. httpx, a generator body: chunked, no Content-Length
    pushed = 0

    def gen():
        nonlocal pushed
        piece = b"0" * MB
        while pushed < total:
            pushed += len(piece)
            yield piece

    if not p.out_of_time():
        t0 = time.monotonic()
        try:
            r = httpx.post(f"{url}/add_items", content=gen(), headers={"content-type": "application/json"},
                           timeout=REQUEST_TIMEOUT_S)
            p.record("httpx chunked 3 x cap to add_items", r.status_code, (413,), r.content,
                     (time.monotonic() - t0) * 1000)
        except httpx.HTTPError as e:
            # the server answered 413 and closed while the client was still writing: httpx reports the write
            # failure, not the answer (the raw-socket request below reads the answer)
            p.record("httpx chunked 3 x cap to add_items", type(e).__name__, (413, "WriteError", "RemoteProtocolError",
                                                                              "ReadError"),
                     str(e).encode(), (time.monotonic() - t0) * 1000)
        out["httpx_bytes_pushed_before_refusal"] = pushed

    # 2. the same over a raw socket, reading the answer as soon as it comes
    head = (f"POST /add_items HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    if not p.out_of_time():
        t0 = time.monotonic()
        res = raw_request(url, head, _chunked(total))
        p.record("raw chunked 3 x cap to add_items", res["status"], (413,), res["body"], (time.monotonic() - t0) * 1000)
        out["raw_bytes_sent_before_answer"] = res["body_bytes_sent"]

    # 3. Transfer-Encoding plus a small Content-Length (the smuggling shape), 1 MB chunked
    head = (f"POST /feedback HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    if not p.out_of_time():
        t0 = time.monotonic()
        res = raw_request(url, head, _chunked(MB))
        p.record("raw Transfer-Encoding + Content-Length: 5 to feedback", res["status"], (400,), res["body"],
                 (time.monotonic() - t0) * 1000)
    # 4. a declared Content-Length of 1 GB, headers only
    head = (f"POST /add_items HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1024 * MB}\r\n\r\n").encode()
    if not p.out_of_time():
        t0 = time.monotonic()
        res = raw_request(url, head, [b"{" * 1024])
        p.record("raw Content-Length 1 GB (1 KB sent) to add_items", res["status"], (413,), res["body"],
                 (time.monotonic() - t0) * 1000)
    # a normal request still works afterwards
    p.post("recommend after the streamed bodies", "/recommend", (200,), json={"user_id": ctx["user"], "k": 3})
    return out


def metrics_cardinality(p: Probe, ctx: dict, n: int = 1000) -> dict:
    """``n`` POSTs to random paths; /metrics must not grow a series per path."""
    token = "atkpath" + os.urandom(3).hex()

    def metrics() -> str:
        r = p.client.get("/metrics")
        r.raise_for_status()
        return r.text

    before = metrics()
    rng = random.Random(7)
    key = ctx.get("api_key")
    expect = (401, 404) if key else (404,)
    mid = ""
    for i in range(n):
        if i == n // 2:  # the first half creates the shared unknown-path series; the second must add none
            mid = metrics()
        if p.out_of_time():
            p.skipped.append(f"random path {i}..{n - 1}")
            break
        path = f"/{token}-{rng.getrandbits(32):08x}/{rng.getrandbits(32):08x}"
        headers = {"Authorization": f"Bearer {key}"} if key and i % 2 else {}
        p.post(f"POST random path #{i}", path, expect, keep=False, json={}, headers=headers)
    after = metrics()
    series = [ln for ln in after.splitlines() if ln and not ln.startswith("#")]
    return {"random_paths": n, "api_key_configured": bool(key),
            "metrics_bytes_before": len(before.encode()), "metrics_bytes_half_way": len(mid.encode()),
            "metrics_bytes_after": len(after.encode()),
            "metrics_series_half_way": sum(1 for ln in mid.splitlines() if ln and not ln.startswith("#")),
            "metrics_series_before": sum(1 for ln in before.splitlines() if ln and not ln.startswith("#")),
            "metrics_series_after": len(series),
            "series_naming_a_random_path": sum(token in ln for ln in series)}


def echo(p: Probe, ctx: dict) -> dict:
    """Unknown, huge ids: the answer must not carry them back."""
    huge = [f"{i}" + "x" * (MB - 1) for i in range(10)]  # ten 1 MB ids: 10 MB of JSON
    long_unknown = [f"nope-{i:05d}-" + "y" * 188 for i in range(1000)]  # valid pattern (200 chars), unknown
    sizes = {}
    cases = [
        ("recommend_by_query liked_item_ids 10 x 1 MB", "/recommend_by_query", {"liked_item_ids": huge}),
        ("recommend_by_query exclude_item_ids 10 x 1 MB", "/recommend_by_query",
         {"text": "jazz", "exclude_item_ids": huge}),
        ("recommend exclude_item_ids 10 x 1 MB", "/recommend", {"user_id": ctx["user"], "exclude_item_ids": huge}),
        ("delete_items item_ids 10 x 1 MB", "/delete_items", {"item_ids": huge}),
        ("recommend_by_query liked_item_ids 1000 unknown 200-char ids", "/recommend_by_query",
         {"liked_item_ids": long_unknown}),
        ("delete_items 1000 unknown 200-char ids", "/delete_items", {"item_ids": long_unknown}),
        ("similar_items unknown 200-char id", "/similar_items", {"item_id": long_unknown[0]}),
    ]
    for label, path, body in cases:
        raw = json.dumps(body).encode()
        r = p.post(label, path, (400, 404, 413), content=raw, headers={"content-type": "application/json"})
        sizes[label] = {"request_bytes": len(raw), "response_bytes": len(r.content) if r is not None else None}
    biggest = max((v["response_bytes"] or 0) for v in sizes.values())
    return {"bodies": sizes, "largest_response_bytes": biggest, "small_bound_bytes": SMALL_BODY_BYTES,
            "all_small": biggest <= SMALL_BODY_BYTES}


def wrong_status(p: Probe, ctx: dict) -> dict:
    """Inputs that used to escape validation as exceptions (OverflowError, RecursionError): 4xx, never 5xx."""
    user = ctx["user"]
    big_int = "1" + "0" * 400  # 1e400 as an integer literal: no float holds it
    j = {"content-type": "application/json"}
    four = tuple(range(400, 500))
    p.post("recommend mix product = 10**400 (integer literal)", "/recommend", four, headers=j,
           content=f'{{"user_id": "{user}", "k": 5, "mix": {{"product": {big_int}}}}}'.encode())
    p.post("recommend mix product = 1e400 (float literal)", "/recommend", four, headers=j,
           content=f'{{"user_id": "{user}", "k": 5, "mix": {{"product": 1e400}}}}'.encode())
    p.post("recommend_by_query mix audio = -10**400", "/recommend_by_query", four, headers=j,
           content=f'{{"text": "jazz", "k": 5, "mix": {{"audio": -{big_int}, "product": 2}}}}'.encode())
    p.post("recommend k = 10**400", "/recommend", four, headers=j,
           content=f'{{"user_id": "{user}", "k": {big_int}}}'.encode())
    nested = "[" * 2000 + "]" * 2000
    body, ctype = multipart_values([*_item_form(f"atk-nest-{ctx['run']}").items(), ("tags", nested)])
    p.post("add_item multipart tags = 2,000-deep nested list", "/add_item", four, content=body,
           headers={"content-type": ctype})
    body, ctype = multipart_values([("text", "jazz"), ("tags", nested)])
    p.post("recommend_by_query multipart tags = 2,000-deep nested list", "/recommend_by_query", four, content=body,
           headers={"content-type": ctype})
    for depth in (2_000, 100_000):
        deep = "[" * depth + "]" * depth
        p.post(f"recommend JSON tags {depth:,}-deep", "/recommend", four, headers=j,
               content=f'{{"user_id": "{user}", "tags": {deep}}}'.encode())
        p.post(f"feedback JSON events {depth:,}-deep", "/feedback", four, headers=j,
               content=f'{{"events": {deep}}}'.encode())
    deep_obj = '{"a":' * 100_000 + "1" + "}" * 100_000
    p.post("add_items JSON 100,000-deep object", "/add_items", four, headers=j,
           content=f'{{"items": [{deep_obj}]}}'.encode())
    p.post("recommend after the malformed inputs", "/recommend", (200,), json={"user_id": user, "k": 3})
    return {}


def unsupported_media(p: Probe, ctx: dict) -> dict:
    """Bytes that are not the modality they are sent as: 415 Unsupported Media Type."""
    text = b"this is a plain text file, not a picture\n" * 50
    mp4 = flat_mp4(64, 64)
    jpg = flat_jpeg(64, 64)
    r = ctx["run"]
    cases = [
        ("text file as image (multipart)", "/recommend_by_query", {"files": {"image": ("notes.png", text, "image/png")}}),
        ("text file as image (b64)", "/recommend_by_query", {"json": {"image_b64": [b64(text)]}}),
        ("text file as item image", "/add_item",
         {"data": _item_form(f"atk-txtimg-{r}"), "files": {"image": ("notes.txt", text, "text/plain")}}),
        ("MP4 as image (multipart)", "/recommend_by_query", {"files": {"image": ("clip.png", mp4, "image/png")}}),
        ("MP4 as item image (b64)", "/add_items",
         {"json": {"items": [{**_item_form(f"atk-mp4img-{r}"), "image_b64": b64(mp4)}]}}),
        ("JPEG as audio (multipart)", "/recommend_by_query", {"files": {"audio": ("song.wav", jpg, "audio/wav")}}),
        ("JPEG as audio (b64)", "/recommend_by_query", {"json": {"audio_b64": [b64(jpg)]}}),
        ("JPEG as item audio", "/add_item",
         {"data": _item_form(f"atk-jpgaud-{r}", "audio"), "files": {"audio": ("song.mp3", jpg, "audio/mpeg")}}),
        ("JPEG as item video", "/add_item",
         {"data": _item_form(f"atk-jpgvid-{r}", "video"), "files": {"video": ("clip.mp4", jpg, "video/mp4")}}),
    ]
    for label, path, kw in cases:
        p.post(label, path, (415,), **kw)
    return {}


def cross_site(p: Probe, ctx: dict) -> dict:
    """Writes a web page of another origin can make (simple requests and forms): refused, state unchanged."""
    user, item, r = ctx["victim_user"], ctx["victim_item"], ctx["run"]
    evil = {"Origin": EVIL}
    host = urlsplit(p.url).netloc

    def state() -> dict:
        cat = p.client.post("/info", json={}).json()["catalog"]
        return {"catalog": {k: cat[k] for k in ("items", "users", "interactions", "deleted_items")},
                "item_there": p.client.post("/similar_items", json={"item_id": item, "k": 1}).status_code,
                "user_known": p.client.post("/user_interests", json={"user_id": user, "top": 1}).status_code}

    before = state()
    refused = (403, 415)
    ev = json.dumps({"events": [{"user_id": user, "item_id": item, "event": "dislike"}]})
    mp_body, mp_type = multipart_values([("item_ids", item)])
    writes = [
        ("delete_items text/plain + evil Origin", "/delete_items",
         {"content": json.dumps({"item_ids": [item]}), "headers": {**evil, "content-type": "text/plain"}}),
        ("delete_items urlencoded + evil Origin", "/delete_items",
         {"content": f"item_ids={item}", "headers": {**evil, "content-type": "application/x-www-form-urlencoded"}}),
        ("delete_items multipart + evil Origin", "/delete_items",
         {"content": mp_body, "headers": {**evil, "content-type": mp_type}}),
        ("delete_items text/plain, no Origin", "/delete_items",
         {"content": json.dumps({"item_ids": [item]}), "headers": {"content-type": "text/plain"}}),
        ("forget_user text/plain + evil Origin", "/forget_user",
         {"content": json.dumps({"user_id": user}), "headers": {**evil, "content-type": "text/plain"}}),
        ("forget_user urlencoded + evil Origin", "/forget_user",
         {"content": f"user_id={user}", "headers": {**evil, "content-type": "application/x-www-form-urlencoded"}}),
        ("forget_user JSON + Origin null", "/forget_user", {"json": {"user_id": user}, "headers": {"Origin": "null"}}),
        ("feedback text/plain + evil Origin", "/feedback",
         {"content": ev, "headers": {**evil, "content-type": "text/plain"}}),
        ("feedback urlencoded + evil Origin", "/feedback",
         {"content": "events=x", "headers": {**evil, "content-type": "application/x-www-form-urlencoded"}}),
        ("feedback JSON + Sec-Fetch-Site: cross-site", "/feedback",
         {"content": ev, "headers": {"content-type": "application/json", "Sec-Fetch-Site": "cross-site"}}),
    ]
    for label, path, kw in writes:
        p.post(label, path, refused, **kw)
    img = small_png()
    forms = [
        ("add_item multipart + evil Origin", f"atk-xs-evil-{r}", {"Origin": EVIL}, (403,)),
        ("add_item multipart + Sec-Fetch-Site: cross-site", f"atk-xs-site-{r}", {"Sec-Fetch-Site": "cross-site"}, (403,)),
        ("add_item multipart + evil Origin + Sec-Fetch-Site", f"atk-xs-both-{r}",
         {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, (403,)),
        ("add_item multipart, no Origin (script)", f"atk-xs-none-{r}", {}, (200,)),
        ("add_item multipart, same-origin Origin", f"atk-xs-same-{r}",
         {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}, (200,)),
    ]
    for label, iid, headers, expect in forms:
        p.post(label, "/add_item", expect, data=_item_form(iid), headers=headers,
               files={"image": ("p.png", img, "image/png")})
    after = state()
    added = {iid: p.client.post("/similar_items", json={"item_id": iid, "k": 1}).status_code
             for _, iid, _, _ in forms}
    should_exist = {iid: 200 in expect for _, iid, _, expect in forms}
    wrong_items = [iid for iid, st in added.items() if (st == 200) != should_exist[iid]]
    expected_catalog = dict(before["catalog"], items=before["catalog"]["items"] + sum(should_exist.values()))
    unchanged = (after["item_there"] == 200 and after["user_known"] == 200 and not wrong_items
                 and after["catalog"] == expected_catalog)
    return {"state_before": before, "state_after": after, "added_items_status": added,
            "items_wrongly_present_or_absent": wrong_items, "state_unchanged": unchanged,
            "lost": 0 if unchanged else 1}


def _consistent(p: Probe, label: str, path: str, body: dict, settle_s: float, hits: int = 6) -> float | None:
    """Seconds until ``hits`` consecutive answers, each on a fresh connection (so across workers), are 200."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < settle_s and not p.out_of_time():
        ok = 0
        for _ in range(hits):
            try:
                st = httpx.post(f"{p.url}{path}", json=body, timeout=30).status_code
            except httpx.HTTPError:
                st = None
            ok += st == 200
        if ok == hits:
            return round(time.monotonic() - t0, 2)
        time.sleep(0.5)
    return None


def lost_writes(p: Probe, ctx: dict, rounds: int = 3, settle_s: float = 20.0) -> dict:
    """The data-loss repros: ids after forget_user, delete + re-add, concurrent forget_user + update_model."""
    item0, item1 = ctx["items"][0], ctx["items"][1]
    run, tag = ctx["run"], ctx.get("tag", "w1")
    acked_b: list[int] = []
    forgotten_ids: list[int] = []
    rounds_out = []
    not_applied = 0
    for i in range(rounds):
        a, b = f"ghost-a-{tag}-{run}-{i}", f"ghost-b-{tag}-{run}-{i}"
        ra = p.post(f"feedback {a} (2 events)", "/feedback", (200,), json={"events": [
            {"user_id": a, "item_id": item0, "event": "like"}, {"user_id": a, "item_id": item1, "event": "play"}]})
        ids_a = ra.json()["event_ids"] if ra is not None and ra.status_code == 200 else []
        p.post(f"forget_user {a}", "/forget_user", (200,), json={"user_id": a})
        rb = p.post(f"feedback {b} (2 events)", "/feedback", (200,), json={"events": [
            {"user_id": b, "item_id": item0, "event": "like"}, {"user_id": b, "item_id": item1, "event": "click"}]})
        ids_b = rb.json()["event_ids"] if rb is not None and rb.status_code == 200 else []
        acked_b += ids_b
        forgotten_ids += ids_a
        first = p.post(f"recommend {b} (first call)", "/recommend", None, json={"user_id": b, "k": 3})
        settle = _consistent(p, f"recommend {b}", "/recommend", {"user_id": b, "k": 3}, settle_s)
        not_applied += settle is None
        rounds_out.append({"ids_a": ids_a, "ids_b": ids_b, "ids_reused": sorted(set(ids_a) & set(ids_b)),
                           "recommend_b_first_status": first.status_code if first is not None else None,
                           "recommend_b_on_every_worker_after_s": settle})
    # delete + re-add of one item
    iid = f"ghost-item-{tag}-{run}"
    spec = {"items": [{"item_id": iid, "type": "product", "title": "ghost item", "tags": ["ghost"]}]}
    p.post(f"add_items {iid}", "/add_items", (200,), json=spec)
    p.post(f"delete_items {iid}", "/delete_items", (200,), json={"item_ids": [iid]})
    p.post(f"add_items {iid} again (re-add)", "/add_items", (200,), json=spec)
    readd = _consistent(p, f"similar_items {iid}", "/similar_items", {"item_id": iid, "k": 3}, settle_s)
    not_applied += readd is None
    # concurrent forget_user + update_model(wait=true)
    conc = concurrent_forget_update(p, ctx, tag, item0, item1)
    # every acknowledged event of the ghost-b users is in the database; no ghost-a event is
    stored = stored_event_ids(ctx["db_url"])
    lost_ids = sorted(set(acked_b) - stored) if stored is not None else None
    resurrected = sorted(set(forgotten_ids) & stored) if stored is not None else None
    return {"rounds": rounds_out, "readd_on_every_worker_after_s": readd, "acknowledged_events": len(acked_b),
            "acknowledged_not_stored": lost_ids, "forgotten_events_still_stored": resurrected,
            "ids_reused_after_forget": sum(len(r["ids_reused"]) for r in rounds_out),
            "writes_not_applied_after_settle": not_applied, "concurrent_forget_update": conc,
            "lost": (len(lost_ids or []) + not_applied + sum(len(r["ids_reused"]) for r in rounds_out)
                     + conc["forgotten_users_still_recommendable"])}


def concurrent_forget_update(p: Probe, ctx: dict, tag: str, item0: str, item1: str, users: int = 8,
                             updates: int = 4) -> dict:
    run = ctx["run"]
    names = [f"ghost-c-{tag}-{run}-{i}" for i in range(users)]
    p.post(f"feedback {users} ghost-c users", "/feedback", (200,), json={"events": [
        {"user_id": u, "item_id": it, "event": "like"} for u in names for it in (item0, item1)]})
    p.post("update_model before the race", "/update_model", (200,), json={"wait": True})
    jobs = [("forget_user", {"user_id": u}) for u in names]
    for k in range(updates):
        jobs.insert(k * 3, ("update_model", {"wait": True}))
    lock = threading.Lock()

    def one(job):
        path, body = job
        t0 = time.monotonic()
        try:
            r = httpx.post(f"{p.url}/{path}", json=body, timeout=REQUEST_TIMEOUT_S)
            status, content = r.status_code, r.content
        except httpx.HTTPError as e:
            status, content = type(e).__name__, str(e).encode()
        with lock:
            p.record(f"concurrent {path} {body.get('user_id', '')}".strip(), status, (200,), content,
                     (time.monotonic() - t0) * 1000)

    if not p.out_of_time():
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(one, jobs))
    time.sleep(0.2)
    still = 0
    for u in names:  # forgotten: every worker must answer 404 for them (after a sync interval)
        deadline = time.monotonic() + ctx.get("sync_settle_s", 12.0)
        while True:
            sts = [httpx.post(f"{p.url}/recommend", json={"user_id": u, "k": 3}, timeout=30).status_code
                   for _ in range(4)]
            if all(s == 404 for s in sts) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        still += not all(s == 404 for s in sts)
    ok = p.post("info after the race", "/info", (200,), json={})
    return {"forget_requests": users, "update_model_requests": updates,
            "forgotten_users_still_recommendable": still,
            "info_after": ok.status_code if ok is not None else None}


def stored_event_ids(db_url: str) -> set[int] | None:
    try:
        from mixrec.storage.store import CatalogStore

        store = CatalogStore(db_url, create=False)
    except Exception:  # noqa: BLE001 - a bench reports, it does not crash on a store it cannot open
        return None
    try:
        return {r.id for r in store.interactions(since_id=0)}
    finally:
        store.close()


# ================================================================ guards cost and the driver

def guards_cost(url: str, user: str, n: int = 300, warmup: int = 20) -> dict:
    """Sequential ``recommend`` latency for a known user on one keep-alive connection."""
    lat = []
    errors = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            r = c.post("/recommend", json={"user_id": user, "k": 10},
                       headers={"content-type": "application/json"})
            dt = time.perf_counter() - t0
            if i >= warmup:
                lat.append(dt)
                errors += r.status_code != 200
    lat.sort()

    def pct(q):
        return round(lat[min(len(lat) - 1, int(round(q / 100 * (len(lat) - 1))))] * 1000, 2)

    return {"requests": n, "warmup": warmup, "errors": errors, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "mean_ms": round(statistics.fmean(lat) * 1000, 2), "max_ms": round(lat[-1] * 1000, 2)}


CLASSES: dict[str, tuple[Callable[[Probe, dict], dict], float]] = {  # name -> (function, time budget in s)
    "audio_sample_rate": (audio_sample_rate, 240.0),
    "decoded_size": (decoded_size, 300.0),
    "streamed_body": (streamed_body, 180.0),
    "metrics_cardinality": (metrics_cardinality, 180.0),
    "echo": (echo, 120.0),
    "wrong_status": (wrong_status, 120.0),
    "unsupported_media": (unsupported_media, 120.0),
    "cross_site": (cross_site, 120.0),
    "lost_writes": (lost_writes, 240.0),
}


def run_class(name: str, url: str, root_pid: int, ctx: dict) -> dict:
    fn, budget = CLASSES[name]
    probe = Probe(url, budget)
    t0 = time.monotonic()
    extra: dict = {}
    with RssSampler(root_pid) as rss:
        try:
            extra = fn(probe, ctx) or {}
        except Exception as e:  # noqa: BLE001 - report the class as broken, go on with the others
            extra = {"bench_error": f"{type(e).__name__}: {e}"[:400]}
        finally:
            probe.close()
    out = {**probe.summary(), "seconds": round(time.monotonic() - t0, 1), "rss_mb": rss.report(), **extra}
    out.setdefault("lost", 0)
    out["rss_delta_max_mb"] = max((v["delta_mb"] for k, v in out["rss_mb"].items() if not k.startswith("_")),
                                  default=0.0)
    out["log"] = probe.log[:60]
    return out


def run_attacks(url: str, root_pid: int, ctx: dict, only: list[str] | None = None) -> dict:
    results = {}
    for name in only or list(CLASSES):
        t0 = time.monotonic()
        results[name] = run_class(name, url, root_pid, ctx)
        r = results[name]
        print(f"== attacks/{name} ({time.monotonic() - t0:.0f} s): {r['requests']} requests {r['statuses']} "
              f"5xx={r['5xx']} unexpected={r['unexpected_count']} lost={r['lost']} "
              f"rss delta MB={ {k: v['delta_mb'] for k, v in r['rss_mb'].items() if not k.startswith('_')} }",
              flush=True)
        for u in r["unexpected"][:10]:
            print(f"   unexpected: {u}", flush=True)
        if r.get("bench_error"):
            print(f"   bench error: {r['bench_error']}", flush=True)
    return results


def summarise(classes: dict, rss_bound_mb: float = RSS_BOUND_MB) -> dict:
    return {"requests": sum(c["requests"] for c in classes.values()),
            "5xx": sum(c["5xx"] for c in classes.values()),
            "unexpected": sum(c["unexpected_count"] for c in classes.values()),
            "lost": sum(c["lost"] for c in classes.values()),
            "rss_bound_mb": rss_bound_mb,
            "classes_over_rss_bound": sorted(n for n, c in classes.items() if c["rss_delta_max_mb"] > rss_bound_mb),
            "worker_restarts": sum(v["worker_restarts"] for c in classes.values()
                                   for k, v in c["rss_mb"].items() if not k.startswith("_"))}


def new_run_id() -> str:
    return time.strftime("%H%M%S") + os.urandom(2).hex()


def max_body_bytes_for(config_path: Path) -> int:
    """The server's body cap (services/http_guards.py) for the limits of ``config_path``.

    ``load_config`` imports nothing of the ``encoders`` package (which bench/encoders.py shadows on
    the bench's sys.path): the config schema is the base layer."""
    from mixrec.config import load_config
    from services.http_guards import max_body_bytes

    return max_body_bytes(load_config(config_path, environ={}))
