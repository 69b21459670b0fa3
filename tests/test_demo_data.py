"""The generated demo catalog: deterministic, valid, decodable, and learnable."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from mixrec.catalog import Item, read_interactions, read_items, read_users
from tools.demo.images import Scene
from tools.demo.sound import synthesize
from tools.demo.catalog import CATEGORIES, CATEGORY_NAMES, generate_demo_catalog

N_ITEMS, N_USERS, SEED = 40, 30, 7


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("demo")
    return out, generate_demo_catalog(out, seed=SEED, n_items=N_ITEMS, n_users=N_USERS)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(catalog, tmp_path):
    out, _ = catalog
    generate_demo_catalog(tmp_path, seed=SEED, n_items=N_ITEMS, n_users=N_USERS)
    first, second = _tree(out), _tree(tmp_path)
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_different_seed_gives_different_catalog(catalog, tmp_path):
    out, _ = catalog
    generate_demo_catalog(tmp_path, seed=SEED + 1, n_items=N_ITEMS, n_users=N_USERS)
    for name in ("items.jsonl", "interactions.csv", "users.jsonl"):
        assert (out / name).read_bytes() != (tmp_path / name).read_bytes()


def test_items_are_valid_unique_and_cover_types_and_categories(catalog):
    out, summary = catalog
    items = read_items(out)
    assert len(items) == N_ITEMS == summary.n_items
    assert len({it.item_id for it in items}) == N_ITEMS
    assert len({it.title for it in items}) == N_ITEMS
    assert {it.type for it in items} == {"product", "video", "audio"}
    assert {it.category for it in items} == set(CATEGORY_NAMES)
    for it in items:
        Item.model_validate(it.model_dump())
        assert it.description and len(it.tags) >= 3
        for rel in (it.image, it.audio, it.video):
            if rel is not None:
                assert not Path(rel).is_absolute() and (out / rel).is_file()
        if it.type == "product":
            assert it.image and not it.audio and not it.video
        elif it.type == "audio":
            assert it.audio and not it.video
        else:
            assert it.video and not it.audio and not it.image
    counts = Counter(it.type for it in items)
    assert summary.items_per_type == {t: counts[t] for t in ("product", "video", "audio")}


def test_every_media_file_decodes(catalog):
    out, _ = catalog
    items = read_items(out)
    formats = Counter()
    for it in items:
        if it.image:
            with Image.open(out / it.image) as img:
                img.load()
                assert img.mode == "RGB" and 96 <= img.width <= 224
            formats[Path(it.image).suffix] += 1
        if it.audio:
            wave, sr = sf.read(out / it.audio, dtype="float32")
            assert wave.ndim == 1 and 16_000 <= sr <= 48_000
            assert 2.9 <= len(wave) / sr <= 8.2
            assert 0.1 < np.abs(wave).max() <= 1.0
            formats[Path(it.audio).suffix] += 1
        if it.video:
            with av.open(str(out / it.video)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            assert 2 <= len(frames) <= 40
            assert frames[0].shape[0] == frames[0].shape[1] in (96, 128)
            assert not np.array_equal(frames[0], frames[-1])  # it moves
            with av.open(str(out / it.video)) as container:
                audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
            assert audio.size > 16_000 and np.abs(audio).max() > 0.05
    assert {".jpg", ".png"} <= set(formats)
    assert len({".wav", ".flac", ".ogg"} & set(formats)) >= 2


def test_interactions_are_nontrivial(catalog):
    out, summary = catalog
    items = {it.item_id: it for it in read_items(out)}
    users = {u.user_id for u in read_users(out)}
    rows = read_interactions(out)
    assert len(rows) == summary.n_interactions
    per_user = Counter(r.user_id for r in rows)
    assert set(per_user) == users and min(per_user.values()) >= 5
    assert 0.02 < summary.density < 0.4
    assert all(r.item_id in items for r in rows)
    assert {items[r.item_id].category for r in rows} == set(CATEGORY_NAMES)
    assert len({(r.user_id, r.item_id) for r in rows}) == len(rows)  # no repeated pairs
    assert {r.event for r in rows} >= {"view", "like", "play"}
    times = defaultdict(list)
    for r in rows:
        times[r.user_id].append(r.timestamp)
    assert all(t == sorted(t) for t in times.values())
    assert [r.timestamp for r in rows] == sorted(r.timestamp for r in rows)


def test_users_concentrate_on_their_dominant_categories(catalog):
    """Hidden tastes drive feedback: far more hits in a user's top categories than chance."""
    out, _ = catalog
    items = {it.item_id: it for it in read_items(out)}
    category_share = Counter(it.category for it in items.values())
    users = {u.user_id: u for u in read_users(out)}
    hits = chance = 0.0
    rows = read_interactions(out)
    for u in users.values():
        assert set(u.tastes) == set(CATEGORY_NAMES) and abs(sum(u.tastes.values()) - 1) < 1e-3
    for r in rows:
        dominant = {c for c, w in users[r.user_id].tastes.items() if w >= 0.2}
        hits += items[r.item_id].category in dominant
        chance += sum(category_share[c] for c in dominant) / len(items)
    assert hits / len(rows) > 0.6
    assert hits / len(rows) > 2 * chance / len(rows)


def _leave_one_out_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Nearest-centroid accuracy, each sample left out of its own class centroid."""
    correct = 0
    for i in range(len(labels)):
        mask = np.arange(len(labels)) != i
        centroids = np.stack([features[mask & (labels == c)].mean(0) for c in np.unique(labels)])
        correct += np.unique(labels)[np.argmin(np.linalg.norm(centroids - features[i], axis=1))] == labels[i]
    return correct / len(labels)


def _sound_features(wave: np.ndarray, sr: int) -> np.ndarray:
    """Mean log energy in log-spaced bands (timbre, register) plus spectral flux (rhythm)."""
    n, hop = 512, 256
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[::hop] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / sr)
    edges = np.geomspace(60, sr / 2, 17)
    bands = np.log10(np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1)
                               for lo, hi in zip(edges[:-1], edges[1:])], 1) + 1e-8)
    flux = np.maximum(np.diff(bands, axis=0), 0).sum(1)
    mean = bands.mean(0)
    return np.concatenate([(mean - mean.max()) / 4, [flux.mean() / 10, flux.std() / 10]])


def test_sound_identifies_its_category():
    sr, feats, labels = 16_000, [], []
    for k, cat in enumerate(CATEGORIES):
        for j in range(3):
            feats.append(_sound_features(synthesize(cat.sound, np.random.default_rng([k, j]), 3.0, sr), sr))
            labels.append(k)
    assert _leave_one_out_accuracy(np.array(feats), np.array(labels)) >= 0.6  # chance: 1/8


def test_pictures_identify_their_category():
    feats, labels = [], []
    for k, cat in enumerate(CATEGORIES):
        for j in range(3):
            img = np.asarray(Scene(cat.visual, np.random.default_rng([k, j]), 96).render(0.3), np.float32)
            hist = np.concatenate([np.histogram(img[..., c], bins=8, range=(0, 256))[0] for c in range(3)])
            feats.append(hist / hist.sum())
            labels.append(k)
    assert _leave_one_out_accuracy(np.array(feats), np.array(labels)) >= 0.6  # chance: 1/8


def test_rejects_a_catalog_too_small_for_every_category(tmp_path):
    with pytest.raises(ValueError, match="n_items"):
        generate_demo_catalog(tmp_path, n_items=len(CATEGORIES) * 3 - 1)


def test_cli_writes_catalog_and_refuses_to_overwrite(tmp_path):
    from tools.cli import app

    runner = CliRunner()
    args = ["demo-data", "--out", str(tmp_path), "--items", "24", "--users", "10", "--seed", "3",
            "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "interactions" in result.output and "density" in result.output
    assert len(read_items(tmp_path)) == 24 and len(read_users(tmp_path)) == 10

    again = runner.invoke(app, args)
    assert again.exit_code != 0
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    assert len(read_items(tmp_path)) == 24

    too_small = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "small"), "--items", "10",
                                    "--no-progress"])
    assert too_small.exit_code == 2 and "n_items" in too_small.output
