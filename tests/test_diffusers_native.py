"""Issue 12: an exported E-TSDM run is a diffusers model that applies its own condition map
(item 1), and ``etsdm.share_timesteps`` / the examples/ training script (item 2)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
from torch import nn

import etsdm
from etsdm.config import dump_config, load_config
from etsdm.diffusers_model import ETSDMUNet2DModel
from etsdm.runs import build_net, export_diffusers, generate, import_diffusers, load_model
from etsdm.samplers import plan
from etsdm.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_NET = ("model.overrides={base_channels: 8, channel_mult: [1], layers_per_block: 1, attention_resolutions: [], "
            "attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}")
NFE = 20  # diffusers' "leading" grid 950, 900, ..., 50, 0: t = 50 lies inside E-TSDM's [0, 100), f_T(50) = 40


def _run(path: Path, condition: str = "etsdm", *overrides: str) -> Path:
    """A digits run with one checkpoint of random (not zero-initialised) weights, written without training."""
    cfg = load_config(None, [TINY_NET, f"diffusion.condition.kind={condition}", *overrides])
    torch.manual_seed(0)
    net = build_net(cfg, (1, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))  # so the output depends on the timestep
    save_checkpoint(path, 7, model=net, ema=None, ema_updates=0, state={}, config_yaml=dump_config(cfg))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("native")
    run = _run(tmp / "run")
    return run, export_diffusers(run, tmp / "hf")


def _ours(spec: Path, sampler: str, seed: int, **options) -> np.ndarray:
    x = generate(load_model(spec), 2, sampler=sampler, nfe=NFE, seed=seed, **options)  # the run's defaults
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # as the pipelines return images


def test_export_is_a_pipeline_folder_whose_unet_applies_f(exported):
    run, out = exported
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["etsdm.diffusers_model", "ETSDMUNet2DModel"]
    pipe = DiffusionPipeline.from_pretrained(str(out))
    assert isinstance(pipe, DDPMPipeline) and isinstance(pipe.unet, ETSDMUNet2DModel)
    assert pipe.scheduler.config.variance_type == "fixed_large" and pipe.scheduler.config.clip_sample
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out_57, out_40 = pipe.unet(x, 57).sample, pipe.unet(x, torch.tensor([40, 40])).sample
        plain = UNet2DModel.from_pretrained(str(out), subfolder="unet")(x, 57).sample  # no map: not the same
    torch.testing.assert_close(out_57, out_40, rtol=0, atol=0)  # f_T(57) = 40
    assert not torch.allclose(plain, out_57)
    card = (out / "README.md").read_text()
    for text in ("t̃ = 100, n = 5", "| training steps | 7 |", f"etsdm export {run}", "kind: etsdm", "import etsdm"):
        assert text in card


# DDPM: `etsdm sample` with the run's defaults (linspace); DDIM: diffusers' DDIM steps t -> t - T//N, which
# is etsdm's DDIM on the leading grid (model card), and `--sampler diffusers:DDIMScheduler` on any grid
@pytest.mark.parametrize("pipeline, sampler, options", [
    (DDPMPipeline, "ddpm", {}), (DDIMPipeline, "diffusers:DDIMScheduler", {}),
    (DDIMPipeline, "ddim", {"timestep_spacing": "leading"})])
def test_diffusers_pipelines_sample_as_etsdm(exported, pipeline, sampler, options):
    run, out = exported
    pipe = pipeline.from_pretrained(str(out))
    if options:
        pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, **options)
    pipe.set_progress_bar_config(disable=True)
    # DDIM: ε̂ recomputed from the clipped x̂0, as ADM's DDIM and etsdm's samplers do
    kwargs = {"use_clipped_model_output": True} if pipeline is DDIMPipeline else {}
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=NFE,
                  output_type="np", **kwargs).images
    np.testing.assert_allclose(images, _ours(run, sampler, 3, **options), rtol=0, atol=2e-5)
    np.testing.assert_allclose(images, _ours(out, sampler, 3, **options), rtol=0, atol=2e-5)  # on the folder
    pipe.unet = UNet2DModel.from_pretrained(str(out), subfolder="unet")  # the silent mistake the class prevents
    wrong = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=NFE,
                 output_type="np", **kwargs).images
    assert np.abs(wrong - images).max() > 1e-3


def _walk(scheduler, n: int) -> list[float]:
    """The times a diffusers DDPM/DDIM scheduler evaluates at, then the time its last step lands on
    (-1: the data, ᾱ = 1); DDIM's steps go t -> t - T//N."""
    scheduler.set_timesteps(n)
    ts = [float(t) for t in scheduler.timesteps]
    land = ts[-1] - scheduler.config.num_train_timesteps // n if isinstance(scheduler, DDIMScheduler) else -1.0
    if isinstance(scheduler, DDIMScheduler):  # every step must land on the next evaluation
        assert all(a - scheduler.config.num_train_timesteps // n == b for a, b in zip(ts, ts[1:], strict=False))
    return [*ts, max(land, -1.0)]


@pytest.mark.parametrize("spacing", [None, "linspace", "leading", "trailing"])
def test_exported_schedulers_walk_the_timesteps_of_etsdm_sample(tmp_path, spacing):
    """The export's DDPM scheduler walks `etsdm sample --sampler ddpm`'s timesteps for the run's
    (default or configured) spacing; DDIM where diffusers' t -> t - T//N step expresses it."""
    over = [f"sample.timestep_spacing={spacing}"] if spacing else []
    run = _run(tmp_path / "r", "etsdm", *over)
    out = export_diffusers(run, tmp_path / "hf")
    m = load_model(run)
    ddpm = DDPMScheduler.from_pretrained(str(out), subfolder="scheduler")
    assert ddpm.config.timestep_spacing == (spacing or "linspace")
    for n in (5, 10, 20, 50):
        assert _walk(ddpm, n) == plan(m.schedule, "ddpm", n, timestep_spacing=spacing)[0], n
        if spacing in ("leading", "trailing"):  # T % n == 0: DDIM's fixed stride is the grid's
            ddim = DDIMScheduler.from_config(ddpm.config)
            assert _walk(ddim, n) == plan(m.schedule, "ddim", n, timestep_spacing=spacing)[0], n
    card = (out / "README.md").read_text()
    assert f"timestep_spacing `{spacing or 'linspace'}`" in card and "t − T//N" in card


def test_export_maps_dynamic_clipping_onto_diffusers_thresholding(tmp_path):
    run = _run(tmp_path / "r", "etsdm", "sample.clip=dynamic")
    out = export_diffusers(run, tmp_path / "hf")
    pipe = DDPMPipeline.from_pretrained(str(out))
    cfg = pipe.scheduler.config
    assert cfg.thresholding and not cfg.clip_sample and cfg.dynamic_thresholding_ratio == 0.995
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=NFE,
                  output_type="np").images
    np.testing.assert_allclose(images, _ours(run, "ddpm", 3), rtol=0, atol=2e-5)
    assert np.abs(images - _ours(run, "ddpm", 3, clip="static")).max() > 1e-3  # not static clipping
    theirs = generate(load_model(run), 2, sampler="diffusers:DDIMScheduler", nfe=NFE, seed=5, clip="dynamic",
                      timestep_spacing="leading")
    ours = generate(load_model(run), 2, sampler="ddim", nfe=NFE, seed=5, clip="dynamic", timestep_spacing="leading")
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)


def test_export_of_a_remap_lambda_grid_run(tmp_path):
    run = _run(tmp_path / "r", "remap", "diffusion.condition.remap_grid=lambda")
    out = export_diffusers(run, tmp_path / "hf")
    assert DDPMScheduler.from_pretrained(str(out), subfolder="scheduler").config.clip_sample  # digits: static
    card = (out / "README.md").read_text()
    assert "λ-uniform" in card and "<this folder> --sampler diffusers:DDPMScheduler --nfe N`" in card
    pipe = DDPMPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=NFE,
                  output_type="np").images
    np.testing.assert_allclose(images, _ours(out, "diffusers:DDPMScheduler", 3), rtol=0, atol=2e-5)  # as the card says


def test_export_replaces_an_old_export_only_once_the_new_one_is_in_place(exported, tmp_path, monkeypatch):
    run, _ = exported
    out = export_diffusers(run, tmp_path / "hf")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".hf.tmp{dead.pid}"  # the temporary folder of an export killed earlier
    stale.mkdir()
    (out / "marker").write_text("old")
    real = os.replace

    def failing(src, target):
        if Path(target) == out and ".hf.tmp" in Path(src).name:  # the new export's move into place
            raise OSError("disk full")
        return real(src, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        export_diffusers(run, out, overwrite=True)
    assert (out / "marker").read_text() == "old" and (out / "model_index.json").is_file()  # still the old one
    monkeypatch.setattr(os, "replace", real)
    export_diffusers(run, out, overwrite=True)
    assert not (out / "marker").exists() and (out / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporaries left, the stale one removed


def test_import_checks_the_condition_options_first(exported, tmp_path):
    _, out = exported
    with pytest.raises(ValueError, match="t_tilde") as err:
        import_diffusers(out, tmp_path / "bad", condition={"kind": "etsdm", "t_tilde": 100.5, "n": 5})
    assert "does not load" not in str(err.value) and not (tmp_path / "bad").exists()


def test_baseline_export_stays_a_plain_unet2dmodel(tmp_path):
    out = export_diffusers(_run(tmp_path / "b", "identity"), tmp_path / "hf")
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    assert json.loads((out / "unet" / "config.json").read_text())["_class_name"] == "UNet2DModel"
    assert type(DiffusionPipeline.from_pretrained(str(out)).unet) is UNet2DModel


def test_import_of_an_export_round_trips(exported, tmp_path):
    run, out = exported
    back = import_diffusers(out, tmp_path / "imported")
    m0, m1 = load_model(run), load_model(back)
    assert m1.denoiser.condition.config() == m0.denoiser.condition.config() == {"kind": "etsdm", "t_tilde": 100,
                                                                                 "n": 5}
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5.0, 57.0, 640.0])
    with torch.no_grad():
        torch.testing.assert_close(m1.denoiser.eps(x, t), m0.denoiser.eps(x, t))  # the map is applied once
    other = import_diffusers(out, tmp_path / "other", condition={"kind": "etsdm", "t_tilde": 200, "n": 4})
    unet_cfg = json.loads((other / "diffusers" / "config.json").read_text())
    assert unet_cfg["etsdm_condition"] == {"kind": "etsdm", "t_tilde": 200, "n": 4}  # diffusers and etsdm agree
    assert load_model(other).denoiser.condition.config() == {"kind": "etsdm", "t_tilde": 200, "n": 4}


# --- item 2: share_timesteps --------------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.label = "toy"

    def forward(self, x, t, scale=1.0):
        return x + scale * torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1)


def test_share_timesteps_wraps_any_module_for_training_and_sampling():
    wrapped = etsdm.share_timesteps(Toy(), t_tilde=100, n=5)
    x = torch.zeros(3, 1)
    t = torch.tensor([0, 57, 640])
    expect = torch.tensor([[0.0], [40.0], [640.0]])
    torch.testing.assert_close(wrapped(x, t), expect)  # positional
    torch.testing.assert_close(wrapped(x, t=t, scale=1.0), expect)  # keyword
    assert wrapped.label == "toy" and wrapped.module.lin is wrapped.lin  # attributes pass through
    import copy

    torch.testing.assert_close(copy.deepcopy(wrapped)(x, t), expect)  # e.g. an EMA copy
    assert etsdm.share.map_timestep(wrapped.condition, 99) == 80 and isinstance(
        etsdm.share.map_timestep(wrapped.condition, 99), int)
    assert wrapped.condition(t).dtype == torch.long  # integer timesteps stay integers
    with pytest.raises(ValueError, match="already applies"):
        etsdm.share_timesteps(wrapped)
    with pytest.raises(ValueError, match="t_tilde"):
        etsdm.share_timesteps(Toy(), t_tilde=2000)


def test_share_timesteps_turns_a_diffusers_unet_into_the_exportable_class(tmp_path):
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1)
    shared = etsdm.share_timesteps(unet, t_tilde=100, n=5)
    assert isinstance(shared, ETSDMUNet2DModel)
    assert all(a is b for a, b in zip(unet.parameters(), shared.parameters(), strict=True))  # same tensors
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(shared(x, 99).sample, unet(x, 80).sample)
    shared.save_pretrained(str(tmp_path))
    back = ETSDMUNet2DModel.from_pretrained(str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(back(x, 99).sample, unet(x, 80).sample)


def test_example_training_script_runs_at_tiny_size(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "train_unconditional_etsdm.py"
    spec = importlib.util.spec_from_file_location("train_unconditional_etsdm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "pipe"
    losses = mod.main(["--output_dir", str(out), "--max_train_steps", "3", "--train_batch_size", "4",
                       "--resolution", "8", "--ddpm_num_inference_steps", "2", "--tiny"])
    assert len(losses) == 3 and all(np.isfinite(losses))
    pipe = DiffusionPipeline.from_pretrained(str(out))
    assert isinstance(pipe.unet, ETSDMUNet2DModel) and pipe.unet.condition.config()["t_tilde"] == 100


# --- item 5: any diffusers scheduler from etsdm ---------------------------------------------------
def test_diffusers_ddim_scheduler_equals_our_ddim(exported):
    run, _ = exported
    m = load_model(run)
    ours = generate(m, 2, sampler="ddim", nfe=NFE, seed=5, timestep_spacing="leading")
    theirs = generate(m, 2, sampler="diffusers:DDIMScheduler", nfe=NFE, seed=5, timestep_spacing="leading")
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)
    calls = []
    m.denoiser.net.register_forward_pre_hook(lambda module, args: calls.append(args[1][0].item()))
    generate(m, 1, sampler="diffusers:DDIMScheduler", nfe=NFE, seed=5, timestep_spacing="leading")
    assert calls[-2:] == [40.0, 0.0]  # t = 50, 0 of the leading grid: the network sees f_T(t)


def test_one_list_of_integer_spacings():
    from etsdm import samplers
    from etsdm.runs import diffusers_sampler

    assert diffusers_sampler.INTEGER_SPACINGS is samplers.INTEGER_SPACINGS  # one concept in one place


def _imports(path: Path) -> tuple[list[str], list[str]]:
    """(modules ``path`` imports at module level, ``file:line`` of imports inside a function)."""
    tree = ast.parse(path.read_text())
    inner = {node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
             for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)}
    top = [("." * node.level + (node.module or "")) if isinstance(node, ast.ImportFrom) else alias.name
           for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom) and node not in inner
           for alias in node.names]
    return top, [f"{path.name}:{node.lineno}" for node in inner]


def test_runs_and_diffusers_sampling_import_at_module_level_without_a_cycle():
    """etsdm.runs never imports etsdm.diffusers_sampling (which re-exports etsdm.runs.diffusers_sampler),
    so no module of either imports inside a function to dodge a cycle."""
    src = Path(etsdm.__file__).parent
    runs = sorted((src / "runs").glob("*.py"))
    assert len(runs) >= 8 and _imports(src / "diffusers_sampling.py")[1] == []
    assert [line for path in runs for line in _imports(path)[1]] == []
    assert [(path.name, m) for path in runs for m in _imports(path)[0] if "diffusers_sampling" in m] == []
    from etsdm import diffusers_sampling
    from etsdm.runs import diffusers_sampler

    assert diffusers_sampling.build_scheduler is diffusers_sampler.build_scheduler


def test_a_scheduler_we_do_not_implement_runs_through_the_cli(exported, tmp_path):
    from click.testing import CliRunner

    from etsdm.cli import main

    run, _ = exported
    out = tmp_path / "unipc.npz"
    res = CliRunner().invoke(main, ["sample", str(run), "--sampler", "diffusers:UniPCMultistepScheduler", "--nfe", "8",
                                    "--num", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "network_evaluations=8" in res.output
    x = np.load(out)["samples"]
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all() and x.std() > 0
    res = CliRunner().invoke(main, ["sample", str(run), "--sampler", "diffusers:NoSuchScheduler", "--num", "1"])
    assert res.exit_code == 2 and "no scheduler class 'NoSuchScheduler'" in res.output


def test_share_timesteps_wraps_a_diffusers_dit():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                                norm_num_groups=1).eval()  # eval: no class-label dropout
    shared = etsdm.share_timesteps(dit, t_tilde=100, n=5)
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    with torch.no_grad():
        out = shared(x, timestep=torch.tensor([57, 57]), class_labels=labels).sample
        torch.testing.assert_close(out, dit(x, timestep=torch.tensor([40, 40]), class_labels=labels).sample)
        assert not torch.allclose(out, dit(x, timestep=torch.tensor([57, 57]), class_labels=labels).sample)
    assert shared.config.num_layers == 1  # the DiT's attributes pass through
