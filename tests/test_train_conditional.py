"""The trainer on conditional data (issue 10): cond from the batch reaches the network, class labels
dropped at rate train.label_dropout, model.num_classes resolved into the saved config, SR's
low-resolution input through cond, a class-conditional run end to end (train, save, load, generate).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from cond_nets import RecordingNet
from etsdm.config import ConfigError, load_config
from etsdm.data import make_dataset, split_batch
from etsdm.guidance import NULL_LABEL
from etsdm.runs import generate, load_model
from etsdm.samplers import sample
from etsdm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")  # many tiny ops on a shared 2-core machine

SMALL_UNET = ("model.overrides={base_channels: 16, channel_mult: [1, 2], layers_per_block: 1, "
              "attention_resolutions: [4], attention_head_dim: 16, time_embedding_dim: 32, norm_num_groups: 8}")


def cfg_with(*sets: str):
    base = [SMALL_UNET, "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.tensorboard=false",
            "train.checkpoint_every=2", "sample.sampler=ddim", "sample.nfe=2", "sample.num=10", "sample.batch=10"]
    return load_config(None, [*base, *sets])


def _record_x0(trainer: Trainer) -> list[Tensor]:
    """The x0 batch of every loss call the trainer makes from now on (its loss wrapped)."""
    seen: list[Tensor] = []
    real = trainer.loss

    def spy(x0, micro_step, cond=None):
        seen.append(x0.clone())
        return real(x0, micro_step, cond)

    trainer.loss = spy
    return seen


def test_labels_reach_the_network_dropped_at_rate_p(tmp_path):
    p, n = 0.3, 4000
    net = RecordingNet()
    trainer = Trainer(cfg_with("data.labels=true", f"train.label_dropout={p}"), tmp_path, net=net, progress=False)
    labels = torch.arange(n) % 10
    trainer.loss(torch.zeros(n, 1, 8, 8), 0, {"labels": labels})
    seen = net.calls[-1]["labels"]
    dropped = seen == NULL_LABEL
    assert torch.equal(seen[~dropped], labels[~dropped])  # kept labels untouched, row for row
    assert abs(float(dropped.float().mean()) - p) < 4 * (p * (1 - p) / n) ** 0.5  # binomial, 4 standard errors
    trainer.loss(torch.zeros(n, 1, 8, 8), 0, {"labels": labels})
    assert torch.equal(net.calls[-1]["labels"], seen)  # seeded by the micro-step: the same drops again
    trainer.loss(torch.zeros(n, 1, 8, 8), 1, {"labels": labels})
    assert not torch.equal(net.calls[-1]["labels"], seen)  # another micro-step, other drops
    none = Trainer(cfg_with("data.labels=true", "train.label_dropout=0"), tmp_path / "p0", net=RecordingNet(),
                   progress=False)
    none.loss(torch.zeros(8, 1, 8, 8), 0, {"labels": labels[:8]})
    assert torch.equal(none.raw_net.calls[-1]["labels"], labels[:8])


def test_training_batches_carry_the_datasets_labels(tmp_path):
    """Through the loop: every row's label (dropout 0) is the label of the very image in that row."""
    net = RecordingNet()
    trainer = Trainer(cfg_with("data.labels=true", "train.label_dropout=0"), tmp_path, net=net, progress=False)
    seen_x = _record_x0(trainer)
    trainer.train()
    ds = make_dataset("digits", labels=True)
    lookup = {tuple(x.flatten().tolist()): int(y) for x, y in zip(ds.images, ds.labels, strict=True)}
    train_calls = net.calls[: len(seen_x)]
    assert len(seen_x) == 2 and all(set(c) == {"labels"} for c in train_calls)
    for x0, call in zip(seen_x, train_calls, strict=True):
        assert call["labels"].tolist() == [lookup[tuple(x.flatten().tolist())] for x in x0]


def test_class_conditional_run_end_to_end(tmp_path):
    cfg = cfg_with("data.labels=true", "sample.guidance=2.0")
    assert cfg.model.num_classes is None
    Trainer(cfg, tmp_path, progress=False).train()
    saved = load_config(tmp_path / "config.yaml")
    assert saved.model.num_classes == 10  # resolved from the data, written into the run
    grid = tmp_path / "samples" / "step_00000002.png"
    assert grid.is_file()  # the preview: one class per row (10 rows of sample.num // 10 = 1), guidance 2
    assert np.load(grid.with_suffix(".npz"))["samples"].shape == (10, 1, 8, 8)
    model = load_model(tmp_path)
    assert model.num_classes == 10 and model.latents is None
    labels = torch.tensor([3, 1, 4, 1, 5])
    x1 = generate(model, 5, sampler="ddim", nfe=3, seed=7, cond={"labels": labels}, guidance=1.0)
    noise = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    plain = sample(model.denoiser, noise, model.schedule, "ddim", 3, clip="static", cond={"labels": labels})
    assert torch.equal(x1, plain)  # guidance 1 is the conditional model itself
    x_run = generate(model, 5, sampler="ddim", nfe=3, seed=7, cond={"labels": labels})  # the run's guidance: 2
    assert not torch.allclose(x_run, x1)
    assert torch.equal(x_run, generate(model, 5, sampler="ddim", nfe=3, seed=7, cond={"labels": labels},
                                       guidance=2.0))
    default = generate(model, 12, sampler="ddim", nfe=2, seed=0, guidance=1.0)  # labels arange(12) % 10
    explicit = generate(model, 12, sampler="ddim", nfe=2, seed=0, guidance=1.0,
                        cond={"labels": torch.arange(12) % 10})
    assert torch.equal(default, explicit)


def test_num_classes_that_contradicts_the_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes: 7, but the data set has 10 classes"):
        Trainer(cfg_with("data.labels=true", "model.num_classes=7"), tmp_path, progress=False)


def test_sr_trainer_passes_lowres_through_cond(tmp_path):
    net = RecordingNet()
    cfg = cfg_with("data.name=sr", "data.sr_base=digits", "data.sr_factor=2", "data.resolution=8")
    trainer = Trainer(cfg, tmp_path, net=net, progress=False)
    seen_x = _record_x0(trainer)
    trainer._one_step(iter(trainer._loader()))
    (x0,), call = seen_x, net.calls[-1]
    ds = make_dataset("sr", sr_base="digits", sr_factor=2, resolution=8)
    assert set(call) == {"lowres"} and call["lowres"].shape == x0.shape
    for row in range(len(x0)):  # each row's lowres is the downsampled-upsampled copy of that row's target
        j = next(i for i in range(len(ds)) if torch.equal(ds.base[i], x0[row]))
        assert torch.equal(call["lowres"][row], split_batch(ds[j])[1]["lowres"])
