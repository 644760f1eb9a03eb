"""Export and import of super-resolution runs (issue 10): ``unet/`` (in_channels = C + cond_channels, as
trained), ``scheduler/`` and a sidecar with ``cond_channels``, ``lowres_upsample`` and ``sr_factor``; the
folder loads back as etsdm's UNet taking ``lowres=`` and samples bit for bit as the run; the model card's
loop, run as written, is ``etsdm sample --sampler diffusers:DDPMScheduler``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from etsdm.cli import main
from etsdm.config import dump_config, load_config
from etsdm.nets.unet import UNet
from etsdm.runs import build_net, export_diffusers, generate, import_diffusers, load_model
from etsdm.train.checkpoint import save_checkpoint
from etsdm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_SR = ["data.name=sr", "data.sr_base=digits", "data.sr_factor=2", "diffusion.condition.kind=etsdm",
           "model.overrides={base_channels: 8, channel_mult: [1], layers_per_block: 1, attention_resolutions: [], "
           "attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}"]
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def sr_export(tmp_path_factory) -> tuple[Path, Path]:
    """A 4x4 -> 8x8 E-TSDM SR run with one checkpoint of random (not zero-initialised) weights, so the
    output depends on x, t and the low-resolution input, and its export."""
    tmp = tmp_path_factory.mktemp("sr")
    cfg = load_config(None, TINY_SR)
    torch.manual_seed(0)
    net = build_net(cfg, SHAPE)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    run = tmp / "run"
    save_checkpoint(run, 5, model=net, ema=None, ema_updates=0, state={}, config_yaml=dump_config(cfg),
                    meta={"data_shape": list(SHAPE)})
    return run, export_diffusers(run, tmp / "hf")


def _lowres(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_sr_export_records_the_low_resolution_input(sr_export):
    _, out = sr_export
    unet_cfg = json.loads((out / "unet" / "config.json").read_text())
    side = json.loads((out / "etsdm.json").read_text())
    assert unet_cfg["_class_name"] == "ETSDMUNet2DModel"
    assert (unet_cfg["in_channels"], unet_cfg["out_channels"]) == (2, 1)  # x and the low-res input, as trained
    assert (side["cond_channels"], side["lowres_upsample"], side["sr_factor"]) == (1, "bicubic", 2)
    assert (out / "scheduler" / "scheduler_config.json").is_file() and not (out / "model_index.json").exists()
    card = (out / "README.md").read_text()
    assert "torch.cat([x, up], 1)" in card and "- super-resolution" in card and "in_channels = 1 + 1" in card


@pytest.mark.parametrize("via_import", [False, True])
def test_sr_export_loads_back_and_samples_as_the_run_bit_for_bit(sr_export, tmp_path, via_import):
    run, out = sr_export
    folder = import_diffusers(out, tmp_path / "imported") if via_import else out
    model, exported = load_model(run), load_model(folder)
    assert isinstance(exported.denoiser.net, UNet) and exported.denoiser.net.cond_channels == 1
    assert exported.shape == SHAPE and exported.data_name == "sr"
    assert exported.denoiser.condition.config() == model.denoiser.condition.config()
    lowres = _lowres(3)
    ours = generate(model, 3, sampler="ddim", nfe=3, seed=4, cond={"lowres": lowres})
    torch.testing.assert_close(generate(exported, 3, sampler="ddim", nfe=3, seed=4, cond={"lowres": lowres}), ours,
                               rtol=0, atol=0)
    other = generate(exported, 3, sampler="ddim", nfe=3, seed=4, cond={"lowres": _lowres(3, seed=2)})
    assert (other - ours).abs().max() > 1e-3  # the low-resolution input reaches the exported network


def test_sr_export_says_what_a_wrong_low_resolution_input_is(sr_export):
    _, out = sr_export
    exported = load_model(out)
    with pytest.raises(ValueError, match=r"lowres must be \(B=2, 1, h, w\), got \(2, 3, 4, 4\)"):
        generate(exported, 2, sampler="ddim", nfe=1, cond={"lowres": torch.zeros(2, 3, 4, 4)})
    with pytest.raises(ValueError, match="low-resolution inputs"):
        generate(exported, 2, sampler="ddim", nfe=1)


def _card_code(folder: Path) -> str:
    card = (folder / "README.md").read_text()
    code = re.search(r"## Use with diffusers.*?```python\n(.*?)```", card, re.S).group(1)
    return code.replace("<this folder>", str(folder))


def test_the_model_cards_loop_is_etsdm_sample_with_the_diffusers_scheduler(sr_export, tmp_path):
    _, out = sr_export
    lowres = _lowres(2)
    scope = {"lowres": lowres}
    torch.manual_seed(7)
    with torch.no_grad():
        exec(_card_code(out), scope)  # the card's loop as written, the user's lowres given
    theirs = scope["x"]
    ours = generate(load_model(out), 2, sampler="diffusers:DDPMScheduler", nfe=50, seed=7, cond={"lowres": lowres})
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)
    np.savez(tmp_path / "lr.npz", lowres=lowres.numpy())
    res = CliRunner().invoke(main, ["sample", str(out), "--lowres", str(tmp_path / "lr.npz"), "--sampler",
                                    "diffusers:DDPMScheduler", "--nfe", "50", "--seed", "7", "--out",
                                    str(tmp_path / "s.npz")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cli = torch.as_tensor(np.load(tmp_path / "s.npz")["samples"])
    torch.testing.assert_close(cli, theirs.clamp(-1, 1), rtol=0, atol=2e-5)  # the command the card names


def test_a_trained_sr_run_exports_with_its_ema_weights(tmp_path):
    """Through the Trainer (EMA weights, the run's saved config and meta): the export samples as the run."""
    cfg = load_config(None, [*TINY_SR, "train.steps=1", "train.batch_size=4", "train.checkpoint_every=1",
                             "train.tensorboard=false", "sample.num=1", "sample.nfe=1"])
    Trainer(cfg, tmp_path / "run", progress=False).train()
    out = export_diffusers(tmp_path / "run", tmp_path / "hf")
    lowres = _lowres(2)
    a = generate(load_model(tmp_path / "run"), 2, sampler="ddpm", nfe=2, seed=0, cond={"lowres": lowres})
    b = generate(load_model(out), 2, sampler="ddpm", nfe=2, seed=0, cond={"lowres": lowres})
    torch.testing.assert_close(b, a, rtol=0, atol=0)
