"""experiments/digits_seeds.py on four tiny runs: paired noise, paired statistics, cache, outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from etsdm.cli import main as cli

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "digits_seeds.py"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["--set", ("model.overrides={base_channels: 16, channel_mult: [1, 2], layers_per_block: 1, "
                  "attention_resolutions: [4], attention_head_dim: 16, time_embedding_dim: 32, norm_num_groups: 8}"),
        "--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "train.tensorboard=false",
        "--set", "sample.sampler=ddim", "--set", "sample.nfe=2", "--set", "sample.num=4", "--no-progress"]


def load_script():
    spec = importlib.util.spec_from_file_location("digits_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1):
        for arm in ("baseline", "etsdm"):
            config = str(CONFIGS / f"digits_{arm}.yaml")
            out = str(root / f"{arm}-s{seed}")
            res = CliRunner().invoke(cli, ["train", config, *TINY, "--set", f"train.seed={seed}", "--out", out])
            assert res.exit_code == 0, res.output
    return root


def test_paired_noise_statistics_outputs_and_cache(runs, tmp_path, monkeypatch):
    script = load_script()
    calls = []
    real_generate = script.generate

    def spy(model, num, **kw):
        calls.append((model.config.diffusion.condition.kind, kw["seed"], kw.get("timestep_spacing")))
        return real_generate(model, num, **kw)

    monkeypatch.setattr(script, "generate", spy)
    out = tmp_path / "out"
    argv = ["--runs", str(runs), "--seeds", "0", "1", "--out", str(out), "--pool", "12", "--n", "6",
            "--eval-seeds", "2", "--plans", "ddim:3",
            "--measure", "--measure-samples", "4", "--t-tilde", "20"]
    res = script.main(argv)
    # each seed: both arms start from the same noise seed; the two seeds use different noise
    assert sorted(calls) == [("etsdm", 1000, None), ("etsdm", 1001, None),
                             ("identity", 1000, None), ("identity", 1001, None)]
    row = res["fid"]["ddim:3"]
    per_seed = [e - b for b, e in zip(row["baseline"]["fid_values"], row["etsdm"]["fid_values"], strict=True)]
    assert row["difference"]["mean"] == pytest.approx(sum(per_seed) / 2)
    d = row["difference"]  # the paired Student-t 95% interval, and the verdict by VERDICT_RULE's words
    half = stats.t.ppf(0.975, 1) * np.std(per_seed, ddof=1) / np.sqrt(2)
    assert (d["low"], d["high"]) == pytest.approx((d["mean"] - half, d["mean"] + half))
    expected = "not resolved" if d["low"] <= 0 <= d["high"] else "reproduced" if d["high"] < 0 else "reversed"
    assert row["verdict"] == expected
    assert (out / "fid_seeds.png").stat().st_size > 0 and (out / "lipschitz_seeds.png").stat().st_size > 0
    assert "ddim:3" in (out / "seeds.md").read_text()
    assert json.loads((out / "seeds.json").read_text())["fid"]["ddim:3"]["floor"] > 0
    m = res["measure"]["table"]
    assert len(res["measure"]["per_run"]["etsdm"][0]["K"]) == 20 and "x̂0 MSE, s = 0.3" in m
    assert "K mean over [0, t̃)" in (out / "seeds.md").read_text()
    # a rerun reuses every cached pool
    calls.clear()
    again = script.main(argv)
    assert again["fid"] == res["fid"] and again["measure"]["table"] == m  # paired noise: deterministic
    assert calls == []


def test_bad_arguments_are_named(runs, tmp_path):
    script = load_script()
    with pytest.raises(SystemExit, match="sampler:nfe"):
        script.parse_plan("ddim")
    with pytest.raises(SystemExit, match="missing run"):
        script.main(["--runs", str(tmp_path), "--seeds", "0", "1", "--out", str(tmp_path / "o"), "--pool", "12",
                     "--n", "6", "--plans", "ddim:2"])


def test_a_diverged_run_fails_its_plan(tmp_path, monkeypatch):
    """NaN samples of one (arm, seed): the plan's row is 'failed' naming them, in the JSON and the table;
    no FID is computed from them and no seed is silently dropped (review item 6)."""
    import argparse

    import torch

    script = load_script()
    pools = {("etsdm", 1): torch.full((4, 1, 8, 8), float("nan"))}
    monkeypatch.setattr(script, "pooled_samples", lambda runs, arm, seed, spec, pool, cache:
                        pools.get((arm, seed), torch.zeros(4, 1, 8, 8)))
    monkeypatch.setattr(script, "feature_net", lambda cache: None)
    seen = []

    def fid(x, train, test, net, n, seeds):
        seen.append(bool(torch.isfinite(x).all()))
        return {"fid": 1.0, "floor": 0.5}

    monkeypatch.setattr(script, "fid_with_floor", fid)
    args = argparse.Namespace(plans=["ddim:3"], seeds=[0, 1], runs=tmp_path, pool=4, n=2, eval_seeds=1)
    table = script.fid_table(args, tmp_path / "cache")
    row = table["ddim:3"]
    assert row["verdict"] == "failed" and len(row["failed"]) == 1 and row["failed"][0].startswith("etsdm seed 1: ")
    assert seen == [True, True, True]  # the three finite pools only
    settings = {"n": 2, "seeds": [0, 1], "eval_seeds": 1}
    assert "| `ddim:3` | | | | diverged: etsdm seed 1: " in script.markdown({"settings": settings, "fid": table})
