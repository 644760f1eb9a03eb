"""Smoke test of experiments/analytic_sharing.py: its --quick mode runs every code path (samplers,
metrics, ODE-solver error, Lipschitz curves, Theorem 4.1, figures) in seconds, and what it writes is
checked against facts that hold whatever the sizes: exact values, not recorded outputs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "analytic_sharing.py"


def load_script():
    spec = importlib.util.spec_from_file_location("analytic_sharing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("analytic")
    try:
        results = load_script().main(["--quick", "--seeds", "2", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # main() sets one thread
    return out, results


def test_quick_run_writes_everything(quick_run):
    out, results = quick_run
    assert json.loads((out / "analytic.json").read_text())["quick"] is True
    tables = (out / "analytic_tables.md").read_text()
    assert "exact samples (floor)" in tables and "sharing bias" in tables
    for name in ("lipschitz_ring", "lipschitz_skewed", "theorem41_ring", "theorem41_skewed", "solver_error", "spread"):
        png = out / "figures" / f"analytic_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for res in results["mixtures"].values():
        for rows in res["quality"]["metrics"].values():
            for cell in rows.values():
                assert all(math.isfinite(v) for m in cell.values() for v in m["value_values"])
                assert len(cell["sliced_w1"]["value_values"]) == 2  # one value per seed


def test_quick_run_facts(quick_run):
    """Facts of the exact models, independent of the sizes of the run."""
    _, results = quick_run
    for res in results["mixtures"].values():
        curves = {c["label"]: c for c in res["lipschitz"]}
        etsdm = curves["E-TSDM post t̃=100 n=5"]
        t, k = torch.tensor(etsdm["t"]), torch.tensor(etsdm["K"])
        inside = (t + 1) % 20 != 0  # t and t+1 in the same sub-interval of [0, 100): one condition
        assert bool((k[inside] == 0).all()) and bool((k[~inside] > 0).all())
        assert all(v > 0 for v in curves["eps*"]["K"])
        for row in res["theorem41"]["rows"]:
            assert row["violations"] == 0  # Theorem 4.1 (Eq. 11) holds at every sampled point
            if row["delta_t"] == 1:
                assert row["err_max"] == 0.0  # one timestep per sub-interval: ε̄ = ε* exactly
        errs = [r["err_max"] for r in res["theorem41"]["rows"] if r["weighting"] == "posterior"]
        assert errs == sorted(errs, reverse=True)  # shrinks as n grows (Δt falls)
        assert all(v["value"] > 0 for v in res["quality"]["sharing_bias"].values())
