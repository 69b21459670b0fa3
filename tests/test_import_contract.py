"""The import contract in .importlinter holds: layers point down, no import loops (also run by make test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contract_is_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports (import-linter, dev extra) is not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_importing_the_service_module_loads_no_model_stack():
    # BentoML imports the entry service's module in every worker, the three encoder services' workers
    # included; the model stack (fusion, LightFM, scikit-learn, SciPy, SQLAlchemy) belongs to the
    # Recommender's worker alone, which imports it when it builds its engine. Before, ops_metrics
    # imported the replica at module level and each encoder worker carried ~200 MB of it.
    heavy = ("fusion", "lightfm", "sklearn", "scipy", "sqlalchemy", "torch", "services.engine", "services.replica")
    code = ("import sys, services.recommender; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout[-3000:]
