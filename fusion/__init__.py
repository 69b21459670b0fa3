"""Fusion: native encoder spaces -> one shared space -> LightFM hybrid model.

Data flow, one module per step:
  shared_space.py   per-modality projections into a text-anchored shared space; masked fusion
  codebook.py       k-means interest clusters over the shared space; soft tokens; readable labels
  features.py       LightFM feature rows: identity + codebook tokens + tags/category/type
  lightfm_state.py  LightFM state as numpy arrays (grow for new features, save/restore, no pickle)
  cold_items.py     content -> collaborative map for items nobody has interacted with yet
  hybrid.py         HybridModel: train, score, recommend, cold start, updates (the public API)
  query.py          Query (native vectors and/or liked items) and its score components / blend
  interests.py      interest distributions over clusters, for known and query users
  explain.py        why an item was recommended
  artifacts.py      save/load (npz + json, format version), BentoML model store
  synthetic.py      a small catalogue with known structure, for tests and quick benchmarks
"""
