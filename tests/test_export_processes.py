"""``etsdm export`` / ``import`` of EDM and flow-matching runs (issue 9).

An EDM run exports ``unet/`` (timestep c_noise = ¼ ln σ, as diffusers' EDM schedulers pass it) and an
``EDMEulerScheduler``; a flow run ``unet/`` (timestep T·t) and a ``FlowMatchEulerDiscreteScheduler``.
diffusers' own loop over the exported folder gives etsdm's Euler samples, the exported folder loads
back as the same Denoiser (E-TSDM's shared conditions included), and ``etsdm import`` round-trips it.
"""

from __future__ import annotations

import json

import pytest
import torch

from etsdm.config import configs_dir, load_config
from etsdm.runs import generate, import_diffusers, load_model
from etsdm.samplers import sample
from etsdm.train.trainer import Trainer

TINY = ["model.overrides={base_channels: 8, channel_mult: [1, 1], layers_per_block: 1, attention_resolutions: [4], "
        "attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}", "train.batch_size=8", "train.steps=1",
        "train.tensorboard=false", "sample.num=2", "sample.batch=2", "sample.nfe=3"]
CASES = {"edm": ("EDMEulerScheduler", "karras", 80.0, [0.003, 0.05, 0.3, 5.0]),
         "flow": ("FlowMatchEulerDiscreteScheduler", "time-uniform", 1.0, [0.01, 0.1, 0.3, 0.9])}
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from etsdm.runs import export_diffusers

    out = {}
    for proc in CASES:
        root = tmp_path_factory.mktemp(proc)
        Trainer(load_config(configs_dir() / f"{proc}_digits_etsdm.yaml", TINY), root / "run", progress=False).train()
        out[proc] = (root / "run", export_diffusers(root / "run", root / "export"))
    return out


@pytest.mark.parametrize("proc", list(CASES))
def test_export_has_the_process_scheduler_and_loads_back_as_the_same_denoiser(exported, proc):
    run, folder = exported[proc]
    scheduler_name, _, _, times = CASES[proc]
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == scheduler_name
    assert json.loads((folder / "unet" / "config.json").read_text())["_class_name"] == "ETSDMUNet2DModel"
    assert not (folder / "model_index.json").exists()  # diffusers has no unconditional EDM / flow pipeline
    assert scheduler_name in (folder / "README.md").read_text()
    a, b = load_model(run), load_model(folder)
    assert b.denoiser.condition.config() == a.denoiser.condition.config()
    x = torch.randn(3, 1, 8, 8)
    for t in times:  # inside and beyond E-TSDM's band
        torch.testing.assert_close(b.denoiser.x0(x, t), a.denoiser.x0(x, t), rtol=0, atol=0)
    imported = load_model(import_diffusers(folder, folder.parent / "imported"))
    torch.testing.assert_close(imported.denoiser.x0(x, times[0]), a.denoiser.x0(x, times[0]), rtol=0, atol=0)


@pytest.mark.parametrize("proc", list(CASES))
def test_diffusers_loop_over_the_export_is_etsdms_euler(exported, proc):
    import diffusers

    from etsdm.diffusers_model import ETSDMUNet2DModel

    run, folder = exported[proc]
    scheduler_name, spacing, init, _ = CASES[proc]
    unet = ETSDMUNet2DModel.from_pretrained(str(folder / "unet"))
    scheduler = getattr(diffusers, scheduler_name).from_pretrained(str(folder), subfolder="scheduler")
    scheduler.set_timesteps(6)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = noise * init  # EDM: σ_max·z (diffusers' init_noise_sigma is sqrt(σ_max² + 1))
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t) if proc == "edm" else x
            x = scheduler.step(unet(inp, t).sample, t, x).prev_sample
    model = load_model(run)
    ours = sample(model.denoiser, noise * init, model.schedule, "euler", 6, timestep_spacing=spacing)
    torch.testing.assert_close(x, ours, rtol=0, atol=2e-5)
    same_seed = generate(load_model(folder), 2, sampler="euler", nfe=6, seed=0, clip="none", timestep_spacing=spacing)
    torch.testing.assert_close(same_seed, ours.float(), rtol=0, atol=0)


def test_flow_baseline_exports_a_plain_unet(tmp_path):
    from etsdm.runs import export_diffusers

    Trainer(load_config(configs_dir() / "flow_digits_baseline.yaml", TINY), tmp_path / "run", progress=False).train()
    folder = export_diffusers(tmp_path / "run", tmp_path / "export")
    assert json.loads((folder / "unet" / "config.json").read_text())["_class_name"] == "UNet2DModel"  # timestep 1000 t
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(load_model(folder).denoiser.x0(x, 0.2), load_model(tmp_path / "run").denoiser.x0(x, 0.2),
                               rtol=0, atol=0)


@pytest.mark.parametrize("proc", list(CASES))
def test_diffusers_samplers_run_on_edm_and_flow_runs(exported, proc):
    """``--sampler diffusers:<Class>`` on an EDM / flow run: the process's scheduler config, the physical
    time fed to the Denoiser; Euler equals etsdm's (EDM: diffusers starts at sqrt(σ_max² + 1)·z, 1e-4 off)."""
    run, _ = exported[proc]
    scheduler_name, spacing, _, _ = CASES[proc]
    model = load_model(run)
    theirs = generate(model, 2, sampler=f"diffusers:{scheduler_name}", nfe=6, seed=0, clip="none")
    ours = generate(model, 2, sampler="euler", nfe=6, seed=0, clip="none", timestep_spacing=spacing)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-3 if proc == "edm" else 2e-5)
    if proc == "edm":
        other = generate(model, 2, sampler="diffusers:EDMDPMSolverMultistepScheduler", nfe=6, seed=0)
        assert torch.isfinite(other).all()


def test_edm_preconditioning_on_a_discrete_vp_run_exports_its_unet_only(tmp_path):
    """EDM's F on a discrete VP schedule is allowed; diffusers' DDPMScheduler has no prediction type for it."""
    from etsdm.runs import export_diffusers

    cfg = load_config(None, [*TINY, "diffusion.prediction=edm", "sample.sampler=ddim"])
    Trainer(cfg, tmp_path / "run", progress=False).train()
    folder = export_diffusers(tmp_path / "run", tmp_path / "export")
    assert not (folder / "scheduler").exists() and not (folder / "model_index.json").exists()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(load_model(folder).denoiser.x0(x, 50), load_model(tmp_path / "run").denoiser.x0(x, 50),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="prediction 'edm' on the discrete linear schedule"):
        generate(load_model(tmp_path / "run"), 1, sampler="diffusers:DDIMScheduler", nfe=3)
