"""MovieLens 100K (ml-100k) as ``EvalData``, read in place (the data may not be redistributed).

Where the files are: the ``data_dir`` argument, else ``$MIXREC_MOVIELENS_DIR``,
else ``../shared/data/ml-100k`` next to the repository. Posters (optional):
``posters_dir``, else ``$MIXREC_POSTERS_DIR``, else ``../shared/data/ml-100k-posters/posters``.

Implicit feedback: **every rating (1-5) counts as a positive** interaction ("the
user chose to watch and rate it"). This is the definition under which plain
LightFM on the ua split (64 components, 20 WARP epochs) reaches the reference
figures P@10 ~0.25 / AUC ~0.94; keeping only 4-5 star ratings gives a sparser,
different task. ``min_rating`` switches to that variant when wanted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Item
from mixrec.config import REPO_ROOT
from tools.evaluation.protocol import EvalData
from tools.evaluation.splits import InteractionLog, WarmSplit, binary_matrix, warm_split

ENV_DATA_DIR = "MIXREC_MOVIELENS_DIR"
ENV_POSTERS_DIR = "MIXREC_POSTERS_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k"
DEFAULT_POSTERS_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k-posters" / "posters"
REQUIRED_FILES = ("u.data", "u.item", "u.genre")
N_GENRES = 19


class MovieLensNotFound(FileNotFoundError):
    """The ml-100k files are not where we looked; the message says where and how to point at them."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    path = Path(data_dir or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR).expanduser().resolve()
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise MovieLensNotFound(f"MovieLens 100K not found in {path} (missing {', '.join(missing)}); "
                                f"pass --data-dir or set {ENV_DATA_DIR}")
    return path


def resolve_posters_dir(posters_dir: str | Path | None = None) -> Path | None:
    """The posters folder if it exists, else None (posters are optional)."""
    path = Path(posters_dir or os.environ.get(ENV_POSTERS_DIR) or DEFAULT_POSTERS_DIR).expanduser().resolve()
    return path if path.is_dir() else None


def _read_ratings(path: Path) -> np.ndarray:
    """(n, 4) int64: user id, movie id, rating, unix timestamp (1-based MovieLens ids)."""
    arr = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    if arr.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 tab-separated columns, got {arr.shape[1]}")
    return arr


def _read_genre_names(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, idx = line.rpartition("|")
            names[int(idx)] = name
    return [names[i] for i in range(len(names))]


def _year(release_date: str) -> str | None:
    # u.item dates look like "01-Jan-1995"; a few are empty.
    tail = release_date.strip()[-4:]
    return tail if tail.isdigit() else None


def _read_items(path: Path, genre_names: list[str], posters: Path | None) -> tuple[list[Item], np.ndarray]:
    items: list[Item] = []
    flags: list[list[int]] = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        movie_id, title, release = fields[0], fields[1].strip(), fields[2]
        row = [int(x) for x in fields[-N_GENRES:]]
        genres = [g for g, f in zip(genre_names, row) if f and g != "unknown"]
        year = _year(release)
        kind = ", ".join(genres).lower() if genres else "uncategorised"
        article = "An" if kind[0] in "aeiou" else "A"
        description = f"{article} {kind} movie" + (f" from {year}" if year else "")
        poster = posters / f"{movie_id}.jpg" if posters is not None else None
        items.append(Item(item_id=movie_id, type="video", title=title or f"movie {movie_id}",
                          description=description, tags=genres, category=genres[0] if genres else None,
                          image=str(poster) if poster is not None and poster.is_file() else None))
        flags.append(row)
    return items, np.asarray(flags, dtype=np.float32)


def load_movielens(data_dir: str | Path | None = None, posters_dir: str | Path | None = None,
                   min_rating: int = 1) -> EvalData:
    """ml-100k as EvalData: 943 users x 1682 movies, items in movie-id order.

    ``extra`` holds ``genres`` (n_items x 19 float32 flags), ``genre_names``,
    ``interactions`` (``InteractionLog`` of the positives in u.data, with timestamps),
    ``data_dir`` and ``min_rating``. ``Item.image`` is an absolute poster path or None.
    """
    root = resolve_data_dir(data_dir)
    genre_names = _read_genre_names(root / "u.genre")
    items, genres = _read_items(root / "u.item", genre_names, resolve_posters_dir(posters_dir))
    ratings = _read_ratings(root / "u.data")
    n_users = int(ratings[:, 0].max())
    user_ids = [str(u) for u in range(1, n_users + 1)]
    item_ids = [it.item_id for it in items]
    if item_ids != [str(i) for i in range(1, len(items) + 1)]:
        raise ValueError(f"{root / 'u.item'}: movie ids are not 1..{len(items)} in order")
    keep = ratings[:, 2] >= min_rating
    log = InteractionLog(ratings[keep, 0] - 1, ratings[keep, 1] - 1, ratings[keep, 3].astype(np.float64),
                         n_users, len(items))
    extra = {"genres": genres, "genre_names": genre_names, "interactions": log,
             "data_dir": str(root), "min_rating": min_rating}
    return EvalData(user_ids=user_ids, item_ids=item_ids, items=items, extra=extra)


def load_official_split(data: EvalData, name: str = "ua") -> WarmSplit:
    """One of the shipped splits (ua, ub, u1..u5) on ``data``'s index space, same positive definition."""
    root = Path(data.extra["data_dir"])
    min_rating = int(data.extra.get("min_rating", 1))
    shape = (data.n_users, data.n_items)

    def matrix(fname: str) -> sp.csr_matrix:
        r = _read_ratings(root / fname)
        r = r[r[:, 2] >= min_rating]
        return binary_matrix(r[:, 0] - 1, r[:, 1] - 1, shape)

    split = warm_split(matrix(f"{name}.base"), matrix(f"{name}.test"))
    split.name = "warm"
    return split


def genre_features(data: EvalData) -> tuple[sp.csr_matrix, list[str]]:
    """The genre flags as a sparse item-feature block with its column names."""
    return sp.csr_matrix(data.extra["genres"]), [f"genre:{g}" for g in data.extra["genre_names"]]

