"""Malformed requests for the Recommender API, each with the 4xx it must get and a word its message must name.

Shared by tests/test_robustness.py and bench/robustness.py. These go beyond the 25
cases of tests/test_api_e2e.py: corrupt and truncated JPEG/PNG, a PNG header
claiming 50000x50000 pixels, zero-byte and non-audio audio, an hour-long WAV, 10 MB
of text, invalid UTF-8, NaN/Infinity in JSON, wrong types, negative and huge k,
malicious-looking ids, duplicate ids, bad mix specs and oversized uploads. Payloads
are built on demand (some are megabytes) and never written to the repository.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

@dataclass(frozen=True)
class Case:
    name: str
    path: str
    build: Callable[[dict], dict]  # context (known user / item ids) -> httpx.post keyword arguments
    status: tuple[int, ...]  # acceptable statuses (all 4xx)
    needle: str  # must appear (case-insensitive) in the error message

    def request(self, ctx: dict) -> dict:
        return self.build(ctx)


# ---------------------------------------------------------------- media builders (small, generated)

def png(size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (20, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size: int = 64) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming width x height RGB pixels (7.5 GB decoded) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def corrupt(data: bytes, keep: int = 24) -> bytes:
    """The format's magic and header, then bytes that are not the format's data."""
    return data[:keep] + bytes(range(256)) * 8


def wav(seconds: float, sr: int = 16_000, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def hour_long_wav() -> bytes:
    """A real one-hour silent WAV kept cheap: 8-bit mono at 1 kHz is 3.6 MB (under the byte limit)."""
    return wav(3600.0, sr=1000, subtype="PCM_U8")


def zero_rate_wav() -> bytes:
    """A WAV whose fmt header claims a sample rate of 0 Hz (a duration of infinity)."""
    data = bytearray(wav(0.5))
    pos = data.find(b"fmt ")
    data[pos + 12:pos + 16] = struct.pack("<I", 0)
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- request builders

def _json(payload) -> Callable[[dict], dict]:
    return lambda ctx: {"json": _fill(payload, ctx)}


def _raw(body: bytes, content_type: str = "application/json") -> Callable[[dict], dict]:
    return lambda ctx: {"content": body.replace(b"{user}", ctx["user"].encode()),
                        "headers": {"content-type": content_type}}


def _files(files: Callable[[], dict], data: dict | None = None) -> Callable[[dict], dict]:
    return lambda ctx: {"files": files(), "data": _fill(data or {}, ctx)}


def _form_values(fields: dict[str, str]) -> Callable[[dict], dict]:
    """A multipart body of plain values only (no file parts), as browsers and curl -F k=v send it."""
    boundary = "mixrec-robustness-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return _raw(body, f"multipart/form-data; boundary={boundary}")


def _fill(obj, ctx: dict):
    """Replace "{user}" / "{item}" placeholders with ids from the served demo."""
    if isinstance(obj, str):
        return obj.replace("{user}", ctx["user"]).replace("{item}", ctx["item"])
    if isinstance(obj, list):
        return [_fill(v, ctx) for v in obj]
    if isinstance(obj, dict):
        return {k: _fill(v, ctx) for k, v in obj.items()}
    return obj


def _item(item_id: str, **media) -> dict:
    return {"item_id": item_id, "type": "product", "title": "robustness probe", **media}


MB = 1024 * 1024
MAX_ERROR_BODY_CHARS = 8192
TRAVERSAL = "../../../../etc/passwd"
SQLISH = "x' OR '1'='1'; DROP TABLE items; --"
LONG_ID = "a" * 10_000
CONTROL_ID = "abc\u0000\u202e\u0007def"

CASES: list[Case] = [
    # ---- images
    Case("truncated-jpeg-upload", "recommend_by_query",
         _files(lambda: {"image": ("t.jpg", jpeg()[: len(jpeg()) // 3], "image/jpeg")}), (400,), "image"),
    Case("corrupt-jpeg-b64", "recommend_by_query", _json({"image_b64": [b64(corrupt(jpeg()))]}), (400,), "image"),
    Case("corrupt-png-upload", "recommend_by_query",
         _files(lambda: {"image": ("c.png", corrupt(png(), keep=33), "image/png")}), (400,), "image"),
    Case("png-decompression-bomb", "recommend_by_query",
         _files(lambda: {"image": ("bomb.png", png_bomb(), "image/png")}), (400,), "pixels"),
    Case("png-bomb-as-item-image", "add_items", _json({"items": [_item("rb-bomb", image_b64=b64(png_bomb()))]}),
         (400,), "pixels"),
    Case("zero-byte-image-upload", "add_item",
         _files(lambda: {"image": ("e.png", b"", "image/png")}, {"item_id": "rb-empty-img", "type": "product",
                                                                  "title": "x"}), (400,), "empty"),
    Case("too-many-query-images", "recommend_by_query", _json({"image_b64": [b64(png())] * 5}), (400,), "limit"),
    Case("oversized-image-b64", "add_items", _json({"items": [_item("rb-big", image_b64="A" * (14 * MB))]}),
         (413,), "image"),
    # ---- audio
    Case("zero-byte-audio-b64", "recommend_by_query", _json({"audio_b64": [""]}), (400,), "empty"),
    Case("png-sent-as-audio", "recommend_by_query",
         _files(lambda: {"audio": ("a.wav", png(), "audio/wav")}), (415,), "audio"),  # not an audio format
    Case("hour-long-wav", "recommend_by_query",
         _files(lambda: {"audio": ("hour.wav", hour_long_wav(), "audio/wav")}), (400,), "long"),
    Case("wav-header-zero-sample-rate", "add_items",
         _json({"items": [{**_item("rb-zero-rate", audio_b64=b64(zero_rate_wav())), "type": "audio"}]}), (400,),
         "audio"),
    Case("body-over-the-request-limit", "add_items", _json({"items": [_item("rb-huge", video_b64="A" * (150 * MB))]}),
         (413,), "limit"),
    Case("oversized-audio-upload", "recommend_by_query",
         _files(lambda: {"audio": ("big.wav", b"RIFF" + b"\x00" * (26 * MB), "audio/wav")}), (413,), "audio"),
    Case("garbage-video-b64", "add_items",
         _json({"items": [{**_item("rb-vid", video_b64=b64(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)),
                           "type": "video"}]}), (400,), "video"),
    # ---- text and encodings
    Case("ten-mb-text", "recommend_by_query", _json({"text": "lorem ipsum " * (10 * MB // 12)}), (400, 413),
         "characters"),
    Case("invalid-utf8-body", "recommend", _raw(b'{"user_id": "\xff\xfe{user}", "k": 3}'), (400,), ""),
    Case("invalid-utf8-text-query", "recommend_by_query", _raw(b'{"text": "caf\xc3\x28 \xa0\xa1"}'), (400,), ""),
    Case("not-json-at-all", "recommend", _raw(b"hello there", "text/plain"), (400, 415), ""),
    Case("multipart-without-boundary", "recommend", _raw(b'{"user_id": "{user}"}', "multipart/form-data"),
         (400,), "boundary"),
    Case("malformed-multipart-body", "recommend_by_query",
         _raw(b'--b\r\nContent-Disposition[x]: form-data; name="text"\r\n\r\njazz\r\n--b--\r\n',
              "multipart/form-data; boundary=b"), (400,), "multipart"),
    Case("file-field-given-as-url", "recommend_by_query",
         _form_values({"image": "http://127.0.0.1:1/secret.png", "text": "jazz"}), (400,), "uploaded files"),
    Case("json-array-not-object", "recommend", _raw(b'[1, 2, 3]'), (400,), ""),
    Case("nan-k", "recommend", _raw(b'{"user_id": "{user}", "k": NaN}'), (400,), "k"),
    Case("nan-weight", "feedback", _raw(b'{"events": [{"user_id": "{user}", "item_id": "x", "weight": NaN}]}'),
         (400,), "weight"),
    Case("infinite-timestamp", "feedback",
         _raw(b'{"events": [{"user_id": "{user}", "item_id": "x", "timestamp": Infinity}]}'), (400,), "timestamp"),
    Case("infinite-diversity", "recommend", _raw(b'{"user_id": "{user}", "diversity": -Infinity}'), (400,),
         "diversity"),
    # ---- wrong types
    Case("user-id-number", "recommend", _json({"user_id": 12345, "k": 3}), (400,), "user_id"),
    Case("k-float", "similar_items", _json({"item_id": "{item}", "k": 2.5}), (400,), "k"),
    Case("events-not-a-list", "feedback", _json({"events": {"user_id": "{user}"}}), (400,), "events"),
    Case("items-a-string", "add_items", _json({"items": "everything"}), (400,), "items"),
    Case("tags-a-string", "recommend", _json({"user_id": "{user}", "tags": "jazz"}), (400,), "tags"),
    Case("unknown-field", "feedback", _json({"events": [{"user_id": "{user}", "item_id": "{item}", "rating": 5}]}),
         (400,), "rating"),
    # ---- k and top
    Case("negative-k-similar", "similar_items", _json({"item_id": "{item}", "k": -5}), (400,), "k must be"),
    Case("huge-k-query", "recommend_by_query", _json({"text": "jazz", "k": 10 ** 30}), (400,), "k"),
    Case("zero-top-interests", "user_interests", _json({"user_id": "{user}", "top": 0}), (400,), "top"),
    Case("huge-top-interests", "user_interests", _json({"user_id": "{user}", "top": 10 ** 9}), (400,), "top"),
    # ---- malicious-looking ids
    Case("traversal-item-id", "similar_items", _json({"item_id": TRAVERSAL}), (400,), "item_id"),
    Case("sqlish-user-id", "user_interests", _json({"user_id": SQLISH}), (400,), "user_id"),
    Case("ten-k-char-user-id", "forget_user", _json({"user_id": LONG_ID}), (400,), "user_id"),
    Case("control-chars-item-id", "feedback", _json({"events": [{"user_id": "{user}", "item_id": CONTROL_ID}]}),
         (400,), "item_id"),
    Case("traversal-delete-id", "delete_items", _json({"item_ids": [TRAVERSAL]}), (400,), "item_ids"),
    Case("sqlish-liked-id", "recommend_by_query", _json({"liked_item_ids": [SQLISH]}), (400, 404), "liked"),
    Case("traversal-add-item-id", "add_item", _form_values({"item_id": TRAVERSAL, "type": "product", "title": "x"}),
         (400,), "item_id"),
    # ---- duplicates and batch sizes
    Case("duplicate-ids-in-request", "add_items", _json({"items": [_item("rb-dup"), _item("rb-dup")]}), (400,),
         "duplicate"),
    Case("existing-item-id", "add_items", _json({"items": [_item("{item}")]}), (409,), "already exist"),
    Case("too-many-events", "feedback",
         _json({"events": [{"user_id": "{user}", "item_id": "{item}"}] * 300}), (400,), "limit"),
    Case("two-images-one-item", "add_item",
         _files(lambda: [("image", ("a.png", png(), "image/png")), ("image", ("b.png", png(), "image/png"))],
                {"item_id": "rb-two", "type": "product", "title": "x"}), (400,), "at most one"),
    # ---- mix specs
    Case("mix-negative-quota", "recommend", _json({"user_id": "{user}", "k": 4, "mix": {"product": -1, "audio": 5}}),
         (400,), "mix"),
    Case("mix-proportions-over-one", "recommend",
         _json({"user_id": "{user}", "k": 4, "mix": {"product": 0.7, "audio": 0.6}}), (400,), "mix"),
    Case("mix-unknown-strategy", "recommend_by_query", _json({"text": "jazz", "mix": "shuffle"}), (400,), "mix"),
    Case("mix-empty", "recommend", _json({"user_id": "{user}", "k": 3, "mix": {}}), (400,), "mix"),
    # ---- found by the attack run: each was a 500, or echoed megabytes back
    Case("mix-count-too-large-for-a-float", "recommend",
         _raw(b'{"user_id": "{user}", "k": 3, "mix": {"product": 1' + b"0" * 400 + b'}}'), (400,), "mix"),
    Case("deeply-nested-multipart-tags", "add_item",
         _form_values({"item_id": "rb-deep", "type": "product", "title": "x", "tags": "[" * 2000 + "]" * 2000}),
         (400,), "nested"),
    Case("deeply-nested-json-body", "recommend", _raw(b'{"user_id": "{user}", "tags": ' + b"[" * 5000 + b"]" * 5000
                                                      + b"}"), (400,), ""),
    Case("megabyte-unknown-liked-ids", "recommend_by_query",
         _json({"liked_item_ids": ["x" * MB] * 10}), (400, 404), "liked_item_ids"),
]


def check_response(case: Case, status: int, text: str) -> str | None:
    """None when the answer is what the case expects, else what is wrong with it."""
    if status not in case.status:
        return f"status {status}, expected {case.status}: {text[:300]}"
    if case.needle and case.needle.lower() not in text.lower():
        return f"message does not name {case.needle!r}: {text[:300]}"
    if len(text) > MAX_ERROR_BODY_CHARS:  # input echoed back whole (ten 1 MB ids once came back as 10 MB)
        return f"error body is {len(text)} characters: {text[:300]}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"error body is not JSON: {text[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and {"status", "code", "message"} <= set(error) and error["status"] == status):
        return f"error body is not the one shape {{'error': {{'status', 'code', 'message'}}}}: {text[:300]}"
    return None
