"""An encoder's identity: a fingerprint of what determines its vectors, and the ONE comparison of two.

The fingerprint of an encoder is
  kind, modality, dim                  what it is
  architecture                         sha256 of its architecture config (transformers config, open_clip model_cfg)
  weights                              sha256 of its weight tensors, rounded to float16 (so the same weights
                                       hash the same on a CPU in float32 and a GPU in float16)
  preprocessing                        sha256 of its tokenizer / image transform / feature extractor settings
  pooling, max_length, ...             the describe() knobs that change vectors
  probe                                the vectors it gives for a fixed generated input (below)
Where the weights came from (``local:``, ``bentoml:``, ``package:``) is not part of it: the same weights
under any source are the same encoder. A third-party kind may define ``identity() -> dict`` to name its
own parts; whatever it cannot name, the probe vectors still pin down.

``mismatches(have, want)`` is the one place two identities are compared (embeddings vs a model, artifacts
vs the configured or served encoders, the Bento at build time, the Recommender at start).

Probe vectors: saved weights (a directory, or the same directory in the BentoML model store) may also carry
``mixrec_probe.json``; ``build_encoder`` re-encodes the probe on load and refuses (``EncoderConfigError``)
when the result differs beyond the tolerance of the dtype it runs in, so a service whose encoders would not
reproduce the training vectors (other weights, another torch build, broken preprocessing) fails at start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from encoders.errors import EncoderConfigError, EncoderMismatchError

PROBE_FILE = "mixrec_probe.json"
PROBE_TEXTS = ["a red bicycle leaning on a stone wall", "smooth jazz saxophone late at night"]
# max |difference| allowed per vector component (unit-norm vectors), by the dtype the encoder runs in
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}
FINGERPRINT_VERSION = 1
# Content fields compared for equality (None on either side = unknown, left to the probe vectors).
CONTENT_FIELDS = ("kind", "modality", "dim", "architecture", "weights", "preprocessing")
# describe() knobs that change the vectors an encoder gives.
KNOBS = ("pooling", "max_length", "text_max_length", "sample_rate", "max_seconds", "image_size")
# Drop from configs before hashing: bookkeeping that does not change the computation.
_VOLATILE = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures", "_commit_hash",
             "processor_class", "_attn_implementation_autoset", "_attn_implementation", "truncation", "padding",
             "output_attentions", "output_hidden_states", "return_dict", "use_cache"}


def probe_inputs(modality: str) -> list:
    """A fixed, generated input per modality (no files, no randomness)."""
    if modality == "text":
        return list(PROBE_TEXTS)
    if modality == "image":
        from PIL import Image

        y, x = np.mgrid[0:96, 0:96]
        rgb = np.stack([(x * 2) % 256, (y * 3) % 256, ((x + y) * 5) % 256], axis=-1).astype(np.uint8)
        return [Image.fromarray(rgb, "RGB")]
    if modality == "audio":
        sr = 16_000
        t = np.arange(sr) / sr
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)).astype(np.float32)
        return [(wave, sr)]
    raise EncoderConfigError(f"no probe input for modality {modality!r}")


def probe(encoder) -> dict[str, list[list[float]]]:
    out = {"encode": np.asarray(encoder.encode(probe_inputs(encoder.modality)), np.float32).tolist()}
    if encoder.modality != "text" and encoder.has_text_tower:
        out["encode_text"] = np.asarray(encoder.encode_text(PROBE_TEXTS), np.float32).tolist()
    return out


def write_probe(directory: str | Path, encoder) -> Path:
    path = Path(directory) / PROBE_FILE
    path.write_text(json.dumps({"dtype": encoder.describe().get("dtype"), "vectors": probe(encoder)}))
    return path


def _probe_difference(have: dict, want: dict) -> tuple[str, float] | None:
    """(key, max |difference|) of the worst probe vector; inf when shapes or keys differ."""
    worst: tuple[str, float] | None = None
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if a is None or b is None or np.shape(a) != np.shape(b):
            return key, float("inf")
        diff = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
        if worst is None or diff > worst[1]:
            worst = (key, diff)
    return worst


def tolerance(*dtypes: Any) -> float:
    return max(TOLERANCE.get(str(d), TOLERANCE["float32"]) for d in dtypes)


def check_probe(directory: str | Path, encoder, where: str = "") -> float | None:
    """Compare the encoder's probe vectors with those saved beside its weights; returns the max
    difference (None when the weights carry no probe). Raises EncoderConfigError on a mismatch."""
    path = Path(directory) / PROBE_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())["vectors"]
    dtype = str(encoder.describe().get("dtype"))
    key, diff = _probe_difference(probe(encoder), saved) or ("encode", 0.0)
    tol = tolerance(dtype)
    if diff == float("inf"):
        raise EncoderConfigError(f"encoder weights {where or directory}: probe {key!r} does not have the shape "
                                 "of the saved one; refusing to start")
    if not diff <= tol:
        raise EncoderConfigError(
            f"encoder weights {where or directory} no longer produce the vectors they were saved with "
            f"(probe {key!r}: max difference {diff:.3g} > {tol:g} for {dtype}); the trained artifacts were "
            "built with those vectors, so the service refuses to start — check the weights, torch build and "
            "preprocessing, or retrain")
    return diff


# ---------------------------------------------------------------------------------------------- fingerprint
def _sha(obj: Any) -> str:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()


def _clean(cfg: Any) -> Any:
    if isinstance(cfg, dict):
        return {k: _clean(v) for k, v in sorted(cfg.items()) if k not in _VOLATILE}
    if isinstance(cfg, (list, tuple)):
        return [_clean(v) for v in cfg]
    return cfg


def weights_digest(module) -> str:
    """sha256 over (name, shape, float16 bytes) of every tensor of a torch module's state dict."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float16)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\0".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _architecture(encoder) -> Any:
    model_cfg = getattr(encoder, "model_cfg", None)
    if model_cfg:
        return _clean(model_cfg)
    config = getattr(getattr(encoder, "model", None), "config", None)
    if config is not None and hasattr(config, "to_dict"):
        return _clean(config.to_dict())
    return None


def _tokenizer_settings(tok) -> Any:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # a fast transformers tokenizer: vocab, normaliser, pre-tokeniser, post-processor
        return _clean(json.loads(backend.to_str()))
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else None
    return {"type": type(tok).__name__, "context_length": getattr(tok, "context_length", None),
            "vocab": _sha(sorted(vocab.items())) if isinstance(vocab, dict) else None}


def _transform_settings(t) -> Any:
    """A torchvision transform pipeline as data: each step's type and public settings (sizes, crop, mean/std)."""
    steps = getattr(t, "transforms", None)
    if isinstance(steps, (list, tuple)):
        return [_transform_settings(x) for x in steps]
    return {"type": type(t).__name__,
            **{k: v for k, v in sorted(vars(t).items()) if not k.startswith("_") and k != "training"}}


def _preprocessing(encoder) -> Any:
    parts = {}
    tok = getattr(encoder, "tokenizer", None)
    if tok is not None:
        parts["tokenizer"] = _tokenizer_settings(tok)
    transform = getattr(encoder, "preprocess", None)
    if transform is not None and not callable(getattr(transform, "to_dict", None)):
        parts["transform"] = _transform_settings(transform)
    features = getattr(encoder, "features", None)
    if features is not None and hasattr(features, "to_dict"):
        parts["features"] = _clean({k: v for k, v in features.to_dict().items() if not isinstance(v, np.ndarray)})
    return parts or None


def _parts(encoder) -> dict[str, Any]:
    desc = encoder.describe()
    own = encoder.identity() if callable(getattr(encoder, "identity", None)) else {}
    model = getattr(encoder, "model", None)
    weights = own.get("weights")
    if weights is None and hasattr(model, "state_dict"):
        weights = weights_digest(model)
    arch = own.get("architecture", _architecture(encoder))
    pre = own.get("preprocessing", _preprocessing(encoder))
    return {"kind": str(desc.get("kind", getattr(encoder, "kind", type(encoder).__name__))),
            "modality": encoder.modality, "dim": int(encoder.dim), "model": desc.get("model"),
            "architecture": None if arch is None else _sha(arch), "weights": weights,
            "preprocessing": None if pre is None else _sha(pre),
            **{k: desc[k] for k in KNOBS if desc.get(k) is not None}}


def identity_digest(encoder) -> str:
    """sha256 of the fingerprint's content and knobs, without the probe (which needs the encoder to run):
    what a derived artifact of the encoder, such as its ONNX export, is keyed by."""
    return _sha(_parts(encoder))


def fingerprint(encoder) -> dict[str, Any]:
    """The encoder's identity (computed once per encoder object). JSON-serialisable."""
    cached = getattr(encoder, "_mixrec_fingerprint", None)
    if cached is not None:
        return cached
    parts = _parts(encoder)
    desc = encoder.describe()
    fp = {"version": FINGERPRINT_VERSION, **parts, "dtype": str(desc.get("dtype", "float32")),
          "source": desc.get("weights"),  # where the weights came from: shown in messages, never compared
          "probe": probe(encoder),
          "digest": _sha({k: v for k, v in parts.items() if k != "model"})[:16]}
    try:
        encoder._mixrec_fingerprint = fp
    except AttributeError:  # an encoder with __slots__: recomputed next time
        pass
    return fp


def describe_with_fingerprint(encoder) -> dict[str, Any]:
    """What training records per modality: describe() plus the fingerprint."""
    return {**encoder.describe(), "fingerprint": fingerprint(encoder)}


# ---------------------------------------------------------------------------------------------- comparison
def _fp(record: dict | None) -> dict | None:
    """The fingerprint inside a describe() record (or the record itself when it is one)."""
    if not record:
        return None
    if "digest" in record and "version" in record:
        return record
    return record.get("fingerprint")


def label(record: dict) -> str:
    """One readable line naming an encoder: kind:model (weights source, dim, digest)."""
    fp = _fp(record) or {}
    src = record.get("source") if record is fp else record.get("weights")
    bits = [f"dim {record.get('dim', fp.get('dim'))}"]
    if src is not None:
        bits.insert(0, f"weights {src}")
    if fp.get("weights"):
        bits.append(f"weights sha256 {fp['weights'][:12]}")
    return f"{record.get('kind', fp.get('kind'))}:{record.get('model', fp.get('model'))} ({', '.join(bits)})"


def mismatches(have: dict, want: dict) -> list[str]:
    """How two encoders' identities differ (empty = the same encoder). Each entry names both sides.

    With a fingerprint on both sides, its content fields and probe vectors are compared; records made before
    fingerprints existed fall back to kind, model and dim."""
    a, b = _fp(have), _fp(want)
    if a is None or b is None:
        out = [f"{k} {have.get(k)!r} vs {want.get(k)!r}" for k in ("kind", "model", "dim")
               if have.get(k) is not None and want.get(k) is not None and str(have.get(k)) != str(want.get(k))]
        return out
    out = [f"{k} {_short(a.get(k))} vs {_short(b.get(k))}" for k in CONTENT_FIELDS
           if a.get(k) is not None and b.get(k) is not None and a.get(k) != b.get(k)]
    out += [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in KNOBS if a.get(k) != b.get(k)]
    worst = _probe_difference(a.get("probe") or {}, b.get("probe") or {})
    tol = tolerance(a.get("dtype"), b.get("dtype"))
    if worst is not None and not worst[1] <= tol:
        out.append(f"probe vectors differ (max {worst[1]:.3g} > {tol:g})")
    return out


def _short(v: Any) -> str:
    return v[:12] if isinstance(v, str) and len(v) == 64 else repr(v)


def check_same(have: dict[str, dict], want: dict[str, dict], *, have_name: str, want_name: str, fix: str,
               slots: Iterable[str] | None = None, error: type = EncoderMismatchError) -> None:
    """Raise EncoderMismatchError naming both sides when any slot's encoders differ (slots on both sides)."""
    problems = []
    for slot in (slots if slots is not None else sorted(set(have) & set(want))):
        h, w = have.get(slot), want.get(slot)
        if not h or not w or not isinstance(h, dict) or not isinstance(w, dict):
            continue
        diff = mismatches(h, w)
        if diff:
            problems.append(f"{slot} encoder: {have_name} has {label(h)}, {want_name} has {label(w)} — {'; '.join(diff)}")
    if problems:
        raise error(f"{have_name} and {want_name} use different encoders:\n  "
                                   + "\n  ".join(problems) + f"\n{fix}")
