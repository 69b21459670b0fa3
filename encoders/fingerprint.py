"""Probe vectors: what saved encoder weights produce for a fixed input, checked whenever they load.

Saved weights (a directory, or the same directory in the BentoML model store) may carry
``mixrec_probe.json``: the vectors the encoder gave for ``probe_inputs`` when the weights
were saved — i.e. the vectors the trained artifacts were built with. ``build_encoder``
re-encodes the probe on load and refuses (``EncoderConfigError``) when the result differs
beyond the tolerance of the dtype it runs in, so a service whose encoders would not
reproduce the training vectors (other weights, another torch build, broken preprocessing)
fails at start instead of serving silently shifted results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from encoders.errors import EncoderConfigError

PROBE_FILE = "mixrec_probe.json"
PROBE_TEXTS = ["a red bicycle leaning on a stone wall", "smooth jazz saxophone late at night"]
# max |difference| allowed per vector component (unit-norm vectors), by the dtype the encoder runs in
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}


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


def check_probe(directory: str | Path, encoder, where: str = "") -> float | None:
    """Compare the encoder's probe vectors with those saved beside its weights; returns the max
    difference (None when the weights carry no probe). Raises EncoderConfigError on a mismatch."""
    path = Path(directory) / PROBE_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())["vectors"]
    got = probe(encoder)
    dtype = str(encoder.describe().get("dtype"))
    tol = TOLERANCE.get(dtype, TOLERANCE["float32"])
    worst = 0.0
    for key, want in saved.items():
        have = got.get(key)
        if have is None or np.shape(have) != np.shape(want):
            raise EncoderConfigError(f"encoder weights {where or directory}: probe {key!r} has shape "
                                     f"{np.shape(have)}, the saved one {np.shape(want)}; refusing to start")
        diff = float(np.max(np.abs(np.asarray(have, np.float64) - np.asarray(want, np.float64))))
        worst = max(worst, diff)
        if not diff <= tol:
            raise EncoderConfigError(
                f"encoder weights {where or directory} no longer produce the vectors they were saved with "
                f"(probe {key!r}: max difference {diff:.3g} > {tol:g} for {dtype}); the trained artifacts were "
                "built with those vectors, so the service refuses to start — check the weights, torch build and "
                "preprocessing, or retrain")
    return worst
