"""mixrec as a Python library for your own items and interactions, in memory (README "Python API").

    from tools import api as mixrec

    catalog = mixrec.items(rows)                         # dicts or a DataFrame; validated, errors name the row
    emb = mixrec.encode_items(catalog)                    # batched, length-sorted, cached by content on disk
    model = mixrec.fit(catalog, emb, interactions, no_components=64, epochs=10)
    top = model.top_k(["u1", "u2", "someone-new"], k=10)  # keyed by user, then item id; unseen users fall back
    report = mixrec.evaluate(catalog, emb, interactions, out="eval/")   # mixrec evaluate's protocols and plots
    tag = model.save_to_model_store()                     # serving.artifacts: bentoml:<tag>; build_bento(model)

Everything here calls the code ``mixrec train`` / ``mixrec evaluate`` and the service run: encoders through
encoders/encode_catalog.py, training through ``HybridModel.train``, scores from fusion/scoring.py.
"""

from tools.api.data import Catalog, DataError, interactions, items
from tools.api.encode import EncodeReport, encode_items
from tools.api.protocols import Evaluation, evaluate
from tools.api.model import MixrecModel, Pick, ScoreTable, UserTopK, fit
from tools.api.settings import resolve_config
from tools.api.ship import build_bento

__all__ = ["Catalog", "DataError", "EncodeReport", "Evaluation", "MixrecModel", "Pick", "ScoreTable", "UserTopK",
           "build_bento", "encode_items", "evaluate", "fit", "interactions", "items", "resolve_config"]
