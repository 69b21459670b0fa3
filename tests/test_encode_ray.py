"""``mixrec encode --engine ray`` gives the local engine's embeddings (a local Ray runtime, tiny catalogue)."""

from __future__ import annotations

import numpy as np
import pytest

from mixrec.catalog import read_items
from mixrec.config import MODALITIES, load_config
from server_harness import REPO_ROOT

ray = pytest.importorskip("ray", reason="pip install 'mixrec[ray]' (ray[data]) for the Ray engine")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_matches_the_local_engine(tiny_demo, local_ray):
    from encoders.encode_catalog import encode_catalog
    from encoders.encode_ray import encode_catalog_ray

    cfg = load_config(REPO_ROOT / "configs" / "offline.yaml",
                      environ={"MIXREC__ENCODE__RAY__ACTORS": "2", "MIXREC__ENCODE__RAY__BATCH_SIZE": "7"})
    items = read_items(tiny_demo.data_dir)
    assert len(items) > 2 * cfg.encode.ray.batch_size  # several blocks, over both actors
    local, local_stats = encode_catalog(cfg, tiny_demo.data_dir, items=items, progress=False)
    remote, stats = encode_catalog_ray(cfg, tiny_demo.data_dir, items=items, progress=False)
    assert remote.item_ids == local.item_ids
    assert remote.encoders == local.encoders
    for m in MODALITIES:
        np.testing.assert_array_equal(remote.masks[m], local.masks[m])
        assert remote.masks[m].any(), m  # the demo has every modality: nothing compared vacuously
        np.testing.assert_allclose(remote.vectors[m], local.vectors[m], atol=2e-5, rtol=0)
    assert stats["skipped"] == local_stats["skipped"]
    assert stats["items"] == len(items) and stats["actors"] == 2


def test_the_encode_command_refuses_an_unknown_engine(tmp_path):
    from typer.testing import CliRunner

    from tools.cli import app

    out = CliRunner().invoke(app, ["encode", "--catalog-dir", str(tmp_path), "--out", str(tmp_path / "e.npz"),
                                   "--engine", "spark"])
    assert out.exit_code == 2 and "--engine must be local or ray" in out.output
