"""Fusion: native encoder spaces -> one shared space -> LightFM hybrid model.

Data flow, one module per step:
  shared_space.py   per-modality projections into a text-anchored shared space; masked fusion
  codebook.py       k-means interest clusters over the shared space; soft tokens; readable labels
  features.py       LightFM feature rows: identity + codebook tokens + tags/category/type
  lightfm_state.py  LightFM state as numpy arrays (grow for new features, save/restore, no pickle)
  cold_items.py     content -> collaborative map for items nobody has interacted with yet
  hybrid.py         HybridModel, the writer: train, add/remove items, feedback, fit_partial, publish
  item_state.py     the writer's per-item caches (columns, feature rows, representations)
  snapshot.py       Snapshot: the published, immutable read model every reader uses
  scoring.py        every score: known user, fresh-event fold-in, query blend, similar items,
                    explanation numbers, interests (the one place a score is computed)
  reader.py         HybridModel's read API (recommend, score_all, similar_items, …) over scoring.py
  query.py          Query (native vectors and/or liked items) and its score components / blend
  interests.py      interest distributions over clusters, for known and query users
  explain.py        why an item was recommended (explanation dicts from scoring.py's numbers)
  model_state.py    ModelState: what a model is made of (export_state / from_state)
  artifacts.py      save/load a ModelState (npz + json, format version), BentoML model store
  synthetic.py      a small catalogue with known structure, for tests and quick benchmarks
"""
