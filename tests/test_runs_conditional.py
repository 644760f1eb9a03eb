"""etsdm.runs on conditional and latent runs (issue 10): generate's cond and guidance, loading,
export / import of class-conditional and latent runs, a latent run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cond_nets import RecordingNet
from etsdm.config import load_config
from etsdm.denoiser import Denoiser
from etsdm.latent import Latents
from etsdm.runs import (
    LoadedModel,
    auto_clip,
    export_diffusers,
    generate,
    import_diffusers,
    load_model,
    sampling_cond,
)
from etsdm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_UNET = ("model.overrides={base_channels: 16, channel_mult: [1, 2], layers_per_block: 1, "
              "attention_resolutions: [4], attention_head_dim: 16, time_embedding_dim: 32, norm_num_groups: 8}")
BASE = [SMALL_UNET, "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.tensorboard=false",
        "train.checkpoint_every=2", "sample.sampler=ddim", "sample.nfe=2", "sample.num=4", "sample.batch=4"]
TINY_AE = """name: tiny
data: {name: digits}
autoencoder: {block_out_channels: [8, 16], norm_num_groups: 4, latent_channels: 2, mid_block_attention: false}
train: {steps: 3, batch_size: 16, lr: 3.0e-3}
"""


def recording_model(num_classes: int = 0, data_name: str = "digits") -> tuple[LoadedModel, RecordingNet]:
    cfg = load_config(None, [*BASE, "data.labels=true"] if num_classes else BASE)
    net = RecordingNet(scale=0.1)
    den = Denoiser(net, cfg.build_schedule())
    return LoadedModel(den, den.schedule, cfg, "rec", data_name, shape=(1, 8, 8), num_classes=num_classes), net


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cond") / "run"
    cfg = load_config(None, [*BASE, "data.labels=true", "diffusion.condition.kind=etsdm", "sample.guidance=1.5"])
    Trainer(cfg, run, progress=False).train()
    return run


# --- generate ------------------------------------------------------------------------------------
def test_generate_gives_every_evaluation_its_batchs_rows():
    model, net = recording_model(num_classes=10)
    labels = torch.tensor([9, 8, 7, 6, 5, 4, 3])
    generate(model, 7, sampler="ddim", nfe=2, batch=3, cond={"labels": labels}, guidance=1.0)
    seen = [c["labels"].tolist() for c in net.calls]
    assert seen == [[9, 8, 7]] * 2 + [[6, 5, 4]] * 2 + [[3]] * 2  # 2 evaluations per batch, rows matched
    net.calls.clear()
    generate(model, 4, sampler="ddim", nfe=1, guidance=1.0)
    assert net.calls[0]["labels"].tolist() == [0, 1, 2, 3]  # default: every class in turn


def test_generate_guidance_calls_the_net_on_both_halves():
    model, net = recording_model(num_classes=10)
    generate(model, 3, sampler="ddim", nfe=1, cond={"labels": torch.tensor([1, 2, 3])}, guidance=3.0)
    assert net.calls[0]["labels"].tolist() == [1, 2, 3, -1, -1, -1]  # one batched call, null labels second


def test_sampling_cond_errors_name_what_is_wrong():
    plain, _ = recording_model()
    with pytest.raises(ValueError, match="not class-conditional"):
        sampling_cond(plain, 2, {"labels": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="guidance 2 needs a class-conditional run"):
        generate(plain, 2, sampler="ddim", nfe=1, guidance=2.0)
    cond, _ = recording_model(num_classes=10)
    with pytest.raises(ValueError, match=r"cond\['labels'\].*3 rows"):
        sampling_cond(cond, 3, {"labels": torch.tensor([0, 1])})
    sr, _ = recording_model(data_name="sr")
    with pytest.raises(ValueError, match="low-resolution inputs"):
        sampling_cond(sr, 2)
    assert set(sampling_cond(sr, 2, {"lowres": torch.zeros(2, 1, 8, 8)})) == {"lowres"}


# --- class-conditional runs: load, export, import ---------------------------------------------------
def test_class_conditional_export_and_import_sample_as_the_run(cond_run, tmp_path):
    model = load_model(cond_run)
    assert model.num_classes == 10 and model.config.model.num_classes == 10
    out = export_diffusers(cond_run, tmp_path / "export")
    assert not (out / "model_index.json").exists()  # DDPMPipeline would call the UNet without labels
    unet_cfg = json.loads((out / "unet" / "config.json").read_text())
    side = json.loads((out / "etsdm.json").read_text())
    assert unet_cfg["num_class_embeds"] == 11 and unet_cfg["_class_name"] == "ETSDMUNet2DModel"
    assert (side["num_classes"], side["null_label_index"], side["guidance"]) == (10, 10, 1.5)
    assert "class_labels=y" in (out / "README.md").read_text()
    exported = load_model(out)
    assert exported.num_classes == 10
    labels = torch.tensor([0, 3, 9, 3])
    for g in (1.0, 1.5):  # the exported UNet is the run's network, also under guidance
        a = generate(model, 4, sampler="ddim", nfe=3, seed=1, cond={"labels": labels}, guidance=g)
        b = generate(exported, 4, sampler="ddim", nfe=3, seed=1, cond={"labels": labels}, guidance=g)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    imported = load_model(import_diffusers(out, tmp_path / "imported"))
    assert imported.num_classes == 10


def test_guidance_with_a_diffusers_scheduler():
    model, net = recording_model(num_classes=10)
    generate(model, 2, sampler="diffusers:DDIMScheduler", nfe=1, cond={"labels": torch.tensor([4, 5])}, guidance=2.0)
    assert [c["labels"].tolist() for c in net.calls] == [[4, 5, -1, -1]]  # guided: both halves in one call
    net.calls.clear()
    generate(model, 2, sampler="diffusers:DDIMScheduler", nfe=1, cond={"labels": torch.tensor([4, 5])}, guidance=1.0)
    assert [c["labels"].tolist() for c in net.calls] == [[4, 5]]


# --- latent runs --------------------------------------------------------------------------------------
def test_latent_run_trains_saves_its_autoencoder_and_decodes(tmp_path):
    (tmp_path / "ae.yaml").write_text(TINY_AE)
    cfg = load_config(None, [*BASE, "latent.autoencoder=ae.yaml", f"latent.cache={tmp_path / 'cache'}",
                             "model.overrides.attention_resolutions=[]", "data.num_samples=64"])
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False, base_dir=tmp_path).train()  # ae.yaml relative to the config's folder
    assert (run / "autoencoder" / "config.json").is_file()
    saved = load_config(run / "config.yaml")
    factor = saved.latent.scaling_factor
    assert factor is not None and factor > 0  # fitted (1/std of the training latents) and written back
    model = load_model(run)
    assert model.latents is not None and model.latents.scaling_factor == factor
    assert model.shape == (2, 4, 4) and auto_clip(model) == "none"  # latents are not clipped like pixels
    raw = generate(model, 3, sampler="ddim", nfe=2, seed=0, decode=False)
    images = generate(model, 3, sampler="ddim", nfe=2, seed=0)
    assert raw.shape == (3, 2, 4, 4) and images.shape == (3, 1, 8, 8)
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    torch.testing.assert_close(images, model.latents.decode(raw))
    train = model.dataset("train")  # what the network models: scaled latents of the training images
    assert train[0].shape == (2, 4, 4) and model.image_dataset("train")[0].shape == (1, 8, 8)
    preview = sorted((run / "samples").glob("*.npz"))[-1]
    import numpy as np

    assert np.load(preview)["samples"].shape == (4, 1, 8, 8)  # the trainer's preview is decoded
    out = export_diffusers(run, tmp_path / "export")
    assert (out / "vae" / "config.json").is_file() and not (out / "model_index.json").exists()
    assert json.loads((out / "etsdm.json").read_text())["scaling_factor"] == factor
    exported = load_model(out)
    assert isinstance(exported.latents, Latents) and exported.latents.scaling_factor == factor
    torch.testing.assert_close(generate(exported, 3, sampler="ddim", nfe=2, seed=0), images, rtol=0, atol=1e-5)
    longer = load_config(None, [*BASE, "latent.autoencoder=ae.yaml", f"latent.cache={tmp_path / 'cache'}",
                                "model.overrides.attention_resolutions=[]", "data.num_samples=64", "train.steps=3"])
    Trainer(longer, run, resume=True, progress=False).train()  # no base_dir: the run's own autoencoder copy
    assert load_config(run / "config.yaml").latent.scaling_factor == factor and load_model(run).step == 3
