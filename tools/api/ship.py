"""Ship a model trained through the library: the BentoML model store, then the same Bento ``mixrec build`` makes.

The Bento (bentofile.yaml, services/) loads ``serving.artifacts: bentoml:<tag>``; tools/packaging.py pins
that tag and the encoder weights and refuses a model whose encoders differ from the ones the build config
serves. Nothing here is specific to the library: it is the same build, handed the library's model tag.
"""

from __future__ import annotations

import os

from tools.api.model import MixrecModel


def build_bento(model: MixrecModel | str, config: str | os.PathLike | None = None, **options) -> str:
    """Build the Bento serving ``model`` (a ``MixrecModel``, saved to the model store now, or a model-store
    tag); ``config``: the build config (default configs/bento.yaml), with no ``MIXREC__*`` environment
    override applied. ``options`` go to ``tools.packaging.build_bento`` (``version``, ``base``...).
    Returns the Bento tag: ``bentoml serve <tag>`` serves it."""
    from tools.packaging import build_bento as build

    tag = model.save_to_model_store() if isinstance(model, MixrecModel) else str(model)
    return build(config, environ={}, model_tag=tag, **options)
