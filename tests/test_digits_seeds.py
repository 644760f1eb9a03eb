"""experiments/digits_seeds.py on four tiny runs: paired noise, paired statistics, cache, outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

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
    assert row["verdict"] in ("reproduced", "reversed", "not resolved")
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
