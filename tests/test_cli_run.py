"""`etsdm train | sample | export | import` and runs.load_model, end to end on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from etsdm.cli import main
from etsdm.runs import LoadedModel, load_model
from etsdm.samplers import sample

TINY = ["--set", ("model.overrides={base_channels: 16, channel_mult: [1, 2], layers_per_block: 1, "
                  "attention_resolutions: [4], attention_head_dim: 16, time_embedding_dim: 32, norm_num_groups: 8}"),
        "--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "train.tensorboard=false",
        "--set", "sample.sampler=ddim", "--set", "sample.nfe=2", "--set", "sample.num=4", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_train_writes_a_complete_run(run_dir):
    assert (run_dir / "config.yaml").exists() and (run_dir / "loss.png").exists()
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000002"
    assert (run_dir / "samples" / "step_00000002.png").exists()


def test_train_resume_continues(run_dir, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    res = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--set", "train.steps=3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (run / "checkpoints" / "latest").read_text() == "step_00000003"
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(run)])
    assert res.exit_code != 0 and "--resume" in res.output


def test_train_bad_input_gives_clear_errors(tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["train", "--set", "train.stepz=1", "--print-config"])
    assert res.exit_code == 2 and "unknown field train.stepz" in res.output
    res = r.invoke(main, ["train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = r.invoke(main, ["train", "--resume"])
    assert res.exit_code == 2 and "--resume needs --out" in res.output
    res = r.invoke(main, ["train", "--set", "diffusion.condition.kind=identity", "--print-config"])
    assert res.exit_code == 0 and "kind: identity" in res.output


def test_load_model_applies_the_run_condition_map(run_dir):
    m = load_model(run_dir)
    assert isinstance(m, LoadedModel) and m.data_name == "digits" and m.step == 2 and m.shape == (1, 8, 8)
    assert m.denoiser.condition.config() == {"kind": "etsdm", "t_tilde": 100, "n": 5}
    assert not m.denoiser.training
    assert len(m.dataset("test")) == 300
    ema, raw = load_model(run_dir, ema=True), load_model(run_dir, ema=False)
    pe, pr = (torch.cat([p.reshape(-1) for p in x.denoiser.net.parameters()]) for x in (ema, raw))
    assert not torch.equal(pe, pr)


def test_sample_command_npz_and_png(run_dir, tmp_path):
    out = tmp_path / "s.npz"
    res = CliRunner().invoke(main, ["sample", str(run_dir), "--sampler", "dpm-solver-2", "--nfe", "4", "--num", "6",
                                    "--seed", "3", "--out", str(out), "--batch", "4"])
    assert res.exit_code == 0, res.output
    x = np.load(out)["samples"]
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all()
    assert out.with_suffix(".png").exists()
    # the same as calling the library directly (EMA weights, the run's Denoiser, same noise)
    m = load_model(run_dir)
    g = torch.Generator().manual_seed(3)
    ref = torch.cat([sample(m.denoiser, torch.randn(k, 1, 8, 8, generator=g), m.schedule, "dpm-solver-2", 4,
                            generator=g, clip="static") for k in (4, 2)])  # --clip auto: static for images
    np.testing.assert_allclose(x, ref.clamp(-1, 1).numpy(), rtol=0, atol=1e-6)  # images are saved clamped
    res = CliRunner().invoke(main, ["sample", str(tmp_path / "nope"), "--num", "2"])
    assert res.exit_code == 2 and "no such run" in res.output


def test_export_loads_in_diffusers_and_import_round_trips(run_dir, tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    out = tmp_path / "hf"
    res = CliRunner().invoke(main, ["export", str(run_dir), str(out)])
    assert res.exit_code == 0, res.output
    unet = UNet2DModel.from_pretrained(str(out), subfolder="unet")  # the plain parent class: no map applied
    sched = DDPMScheduler.from_pretrained(str(out), subfolder="scheduler")
    m = load_model(run_dir)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), m.schedule.alphas_cumprod().numpy(), rtol=1e-6)
    side = json.loads((out / "etsdm.json").read_text())
    assert side["condition"] == {"kind": "etsdm", "t_tilde": 100, "n": 5}
    # diffusers' UNet at timestep f(t) equals etsdm's network at t
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5.0, 57.0, 640.0])
    c = m.denoiser.condition(t.double()).float()
    with torch.no_grad():
        torch.testing.assert_close(unet(x, c).sample, m.denoiser.net_output(x, t))
    # import: a plain diffusers folder becomes an etsdm run with the same Denoiser
    (out / "etsdm.json").unlink()
    run2 = tmp_path / "imported"
    res = CliRunner().invoke(main, ["import", str(out), str(run2), "--condition", "etsdm", "--t-tilde", "100"])
    assert res.exit_code == 0, res.output
    m2 = load_model(run2)
    assert m2.denoiser.condition.config() == m.denoiser.condition.config()
    np.testing.assert_allclose(m2.schedule.alphas_cumprod().numpy(), m.schedule.alphas_cumprod().numpy(), rtol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(m2.denoiser.eps(x, t), m.denoiser.eps(x, t), rtol=1e-5, atol=1e-5)
    res = CliRunner().invoke(main, ["import", str(tmp_path), str(tmp_path / "x")])
    assert res.exit_code == 1 and "no diffusers UNet2DModel" in res.output
    # --t-tilde belongs to --condition etsdm; a bad t̃ is named as such (not "the UNet does not load")
    res = CliRunner().invoke(main, ["import", str(out), str(tmp_path / "y"), "--t-tilde", "100"])
    assert res.exit_code == 2 and "--t-tilde" in res.output and "--condition etsdm" in res.output
    res = CliRunner().invoke(main, ["import", str(out), str(tmp_path / "z"), "--condition", "etsdm", "--t-tilde",
                                    "100.5"])
    assert res.exit_code == 1 and "t_tilde" in res.output and "does not load" not in res.output


def test_plain_diffusers_folder_without_sidecar_uses_its_scheduler(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1)
    unet.save_pretrained(str(tmp_path))
    DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2",
                  prediction_type="v_prediction").save_pretrained(str(tmp_path))
    m = load_model(tmp_path)
    assert m.config is None and m.denoiser.prediction == "v" and m.schedule.T == 50
    assert m.denoiser.condition.config() == {"kind": "identity"}
    ref = DDPMScheduler.from_pretrained(str(tmp_path)).alphas_cumprod.double()
    np.testing.assert_allclose(m.schedule.alphas_cumprod().numpy(), ref.numpy(), rtol=1e-6)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(m.denoiser.net_output(x, 7.0), unet(x, torch.tensor([7.0, 7.0])).sample)


def test_gmm_specs_are_exact_denoisers():
    from etsdm.analytic import GaussianMixture
    from etsdm.schedules import make_schedule

    sched = make_schedule("linear")
    mix = GaussianMixture.ring()
    x = torch.randn(5, 2, dtype=torch.float64)
    base, etsdm = load_model("gmm"), load_model("gmm:etsdm")
    torch.testing.assert_close(base.denoiser.eps(x, 30.0), mix.eps(x, 30.0, sched))
    from etsdm.conditioning import TimestepSharing

    ref = mix.shared_eps(x, 30.0, sched, TimestepSharing(100, 5))
    torch.testing.assert_close(etsdm.denoiser.eps(x, 30.0), ref)
    torch.testing.assert_close(etsdm.denoiser.eps(x, 20.0), etsdm.denoiser.eps(x, 39.0))  # one shared condition
    assert etsdm.denoiser.condition.config()["kind"] == "etsdm" and base.mixture is not None
    assert len(base.dataset("test")) > 0
    cont = load_model("gmm:etsdm:continuous")
    csched = make_schedule("linear", continuous=True)
    ref = mix.shared_eps(x, 0.05, csched, TimestepSharing(0.1, 5, T=None))
    torch.testing.assert_close(cont.denoiser.eps(x, 0.05), ref)
    assert cont.schedule.continuous and load_model("gmm:continuous").denoiser.condition.config() == {"kind": "identity"}


def test_sample_evaluate_reports_mixture_metrics_with_their_floor(tmp_path):
    """`etsdm sample --evaluate` on the exact mixture: metrics beside their true-vs-true values; exact
    ε* with DDPM gives a near-mode share close to the true one, a 1-step sampler does not."""
    shares = {}
    for nfe in (1, 200):
        out = tmp_path / f"g{nfe}.npz"
        res = CliRunner().invoke(main, ["sample", "gmm", "--sampler", "ddpm", "--nfe", str(nfe), "--num", "400",
                                        "--out", str(out), "--evaluate", "--eval-seeds", "0,1", "--threads", "1"])
        assert res.exit_code == 0, res.output
        results = json.loads(out.with_suffix(".eval.json").read_text())
        gmm = results["gmm"]
        shares[nfe] = (gmm["near_mode"]["value"], gmm["near_mode"]["true"])
    true_share = shares[200][1]
    assert abs(shares[200][0] - true_share) < 0.05
    assert shares[1][0] < true_share - 0.2


def test_sample_evaluate_rejects_bad_seeds(tmp_path):
    res = CliRunner().invoke(main, ["sample", "gmm", "--num", "4", "--nfe", "2", "--out", str(tmp_path / "a.npz"),
                                    "--evaluate", "--eval-seeds", "x"])
    assert res.exit_code != 0 and "--eval-seeds" in res.output


def test_sample_command_keeps_the_runs_clip_and_order_plan(run_dir, tmp_path, monkeypatch):
    """Without --clip / --order-plan, `etsdm sample` uses the run's sample config (review item 3)."""
    import dataclasses

    import etsdm.runs

    real = etsdm.runs.load_model

    def load_with_sample_config(*args, **kwargs):  # the run's config.yaml with sample.clip / order_plan set
        m = real(*args, **kwargs)
        sample_cfg = dataclasses.replace(m.config.sample, clip="none", order_plan="diffusers")
        return dataclasses.replace(m, config=dataclasses.replace(m.config, sample=sample_cfg))

    monkeypatch.setattr(etsdm.runs, "load_model", load_with_sample_config)
    out = tmp_path / "s.npz"
    args = ["sample", str(run_dir), "--sampler", "dpm-solver-3", "--nfe", "5", "--num", "2", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    sampling = json.loads(str(np.load(out)["sampling"]))
    assert sampling["clip"] == "none" and sampling["order_plan"] == "diffusers", sampling
    res = CliRunner().invoke(main, [*args, "--force", "--clip", "static", "--order-plan", "lu"])
    sampling = json.loads(str(np.load(out)["sampling"]))
    assert res.exit_code == 0 and sampling["clip"] == "static" and sampling["order_plan"] == "lu", res.output
