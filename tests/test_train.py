"""Trainer, EMA, checkpoints and the resumable sampler.

Every training test runs a few steps of a very small UNet on the digits (or an MLP on the mixture).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from etsdm.config import load_config
from etsdm.train import checkpoint as ckpt_mod
from etsdm.train.checkpoint import latest_checkpoint, load_state
from etsdm.train.ema import EMA
from etsdm.train.sampler import StepBatchSampler
from etsdm.train.trainer import NonFiniteLossError, Trainer

SMALL_UNET = ("model.overrides={base_channels: 16, channel_mult: [1, 2], layers_per_block: 1, "
              "attention_resolutions: [4], attention_head_dim: 16, time_embedding_dim: 32, norm_num_groups: 8}")


def tiny_cfg(steps: int, **extra: object):
    sets = [SMALL_UNET, f"train.steps={steps}", "train.batch_size=8", "train.checkpoint_every=3", "train.log_every=1",
            "train.tensorboard=false", "train.lr=1e-3", "train.ema_rate=0.9", "sample.sampler=ddim", "sample.nfe=2",
            "sample.num=4", "diffusion.condition.kind=etsdm"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, sets)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# --- EMA -------------------------------------------------------------------------------------------
def test_ema_matches_closed_form_with_warmup():
    net = torch.nn.Linear(3, 2)
    w0 = [p.detach().clone() for p in net.parameters()]
    ema = EMA(net, rate=0.95, warmup=True)
    expected = [w.clone() for w in w0]
    for k in range(25):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.95, (1 + k) / (10 + k))  # the documented warm-up
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, net.parameters(), strict=True)]
        ema.update(net)
    for e, p in zip(expected, ema.module.parameters(), strict=True):
        torch.testing.assert_close(p, e)
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_ema_without_warmup_uses_the_rate():
    ema = EMA(torch.nn.Linear(2, 2), rate=0.9999, warmup=False)
    assert ema.decay() == 0.9999
    with pytest.raises(ValueError, match="rate"):
        EMA(torch.nn.Linear(2, 2), rate=1.5)


# --- sampler ---------------------------------------------------------------------------------------
def test_sampler_ranks_disjoint_and_resume_continues():
    n, b = 50, 4
    s0 = StepBatchSampler(n, b, seed=3, rank=0, world_size=2)
    s1 = StepBatchSampler(n, b, seed=3, rank=1, world_size=2)
    it0 = iter(s0)
    first = [next(it0) for _ in range(20)]  # crosses epochs (6 global batches per epoch)
    for k in range(20):
        assert not set(first[k]) & set(s1.indices(k))
    epoch0 = sum((s0.indices(k) + s1.indices(k) for k in range(6)), [])
    assert len(set(epoch0)) == 48  # one epoch: no example twice
    resumed = iter(StepBatchSampler(n, b, seed=3, rank=0, world_size=2, start=7))
    assert [next(resumed) for _ in range(13)] == first[7:]
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(5, 4, world_size=2)


# --- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    args = dict(model=net, ema=net, ema_updates=1, state={"a": torch.ones(2)}, config_yaml="x: 1\n", keep_last=2)
    good = ckpt_mod.save_checkpoint(tmp_path, 1, **args)
    calls = {"n": 0}
    real = ckpt_mod.save_file

    def dying_save(*a, **k):  # the process "dies" while writing the second file of step 2
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt_mod.save_checkpoint(tmp_path, 2, **args)
    assert latest_checkpoint(tmp_path) == good
    assert [p.name for p in ckpt_mod.checkpoint_dirs(tmp_path)] == ["step_00000001"]
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    for step in (2, 3, 4):
        ckpt_mod.save_checkpoint(tmp_path, step, **args)
    assert [p.name for p in ckpt_mod.checkpoint_dirs(tmp_path)] == ["step_00000003", "step_00000004"]
    assert latest_checkpoint(tmp_path).name == "step_00000004"


# --- the trainer -----------------------------------------------------------------------------------
def test_resume_is_bit_exact(tmp_path):
    """6 steps straight == 3 steps, stop, resume for 3 more: every weight, EMA weight, Adam moment."""
    Trainer(tiny_cfg(6), tmp_path / "full", progress=False).train()
    Trainer(tiny_cfg(3), tmp_path / "split", progress=False).train()
    res = Trainer(tiny_cfg(6), tmp_path / "split", resume=True, progress=False).train()
    assert res.step == 6
    a, b = latest_checkpoint(tmp_path / "full"), latest_checkpoint(tmp_path / "split")
    assert a.name == b.name == "step_00000006"
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = weights(a / f), weights(b / f)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (f, k)
    sa, sb = load_state(a)["optimizer"]["state"], load_state(b)["optimizer"]["state"]
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][k], sb[i][k])
    # and the weights did move (a test of a frozen net would pass trivially)
    w3 = weights(tmp_path / "split" / "checkpoints" / "step_00000003" / "model.safetensors")
    assert any(not torch.equal(w3[k], weights(a / "model.safetensors")[k]) for k in w3)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["step"] == 6 and meta["data_shape"] == [1, 8, 8]
    assert (tmp_path / "full" / "loss.png").stat().st_size > 0
    assert list((tmp_path / "full" / "samples").glob("*.png"))
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_dropout_draws_depend_on_the_step_only(tmp_path, monkeypatch):
    """Dropout draws from the global generator, seeded per step: other draws from it between steps
    (a preview, user code) do not change the weights."""
    cfg = tiny_cfg(3, **{"model.overrides": SMALL_UNET.split("=", 1)[1].replace("}", ", dropout: 0.5}")})
    Trainer(cfg, tmp_path / "quiet", progress=False).train()
    real = Trainer._one_step

    def noisy(self, data):
        torch.rand(7)
        return real(self, data)

    monkeypatch.setattr(Trainer, "_one_step", noisy)
    Trainer(cfg, tmp_path / "noisy", progress=False).train()
    wa = weights(latest_checkpoint(tmp_path / "quiet") / "model.safetensors")
    wb = weights(latest_checkpoint(tmp_path / "noisy") / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_step_seeding_seeds_the_cpu_generator_as_torch_manual_seed_does():
    from etsdm.train.trainer import _seed_global_rngs

    _seed_global_rngs(1234, torch.device("cpu"))
    ours = torch.rand(5)
    torch.manual_seed(1234)
    assert torch.equal(ours, torch.rand(5))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = Trainer.loss

    def poisoned(self, x0, micro_step, cond=None):
        out = real(self, x0, micro_step, cond)
        if micro_step == 4:  # step 5
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(Trainer, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*last good checkpoint: .*step_00000003"):
        Trainer(tiny_cfg(8), tmp_path, progress=False).train()
    last = latest_checkpoint(tmp_path)
    assert last.name == "step_00000003"
    assert all(torch.isfinite(v).all() for v in weights(last / "model.safetensors").values())


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        Trainer(tiny_cfg(2), tmp_path, resume=True, progress=False)


def test_batch_must_split_over_accumulation(tmp_path):
    with pytest.raises(ValueError, match="train.batch_size"):
        Trainer(tiny_cfg(2, **{"train.grad_accum": 3}), tmp_path, progress=False)


def test_grad_accumulation_and_mlp_on_gmm(tmp_path):
    from etsdm.config import configs_dir

    sets = ["data.num_samples=64", "model.preset=tiny", "train.steps=2", "train.batch_size=16", "train.grad_accum=2",
            "train.tensorboard=false", "sample.sampler=ddim", "sample.nfe=3", "sample.num=8",
            "schedule.continuous=true", "diffusion.prediction=v"]
    cfg = load_config(configs_dir() / "gmm_etsdm.yaml", sets)
    res = Trainer(cfg, tmp_path, progress=False).train()
    assert res.step == 2 and res.final_loss is not None
    assert (tmp_path / "samples" / "step_00000002.png").exists()


# --- two processes (gloo) --------------------------------------------------------------------------
class _Recording(torch.utils.data.Dataset):
    def __init__(self, base, log: Path):
        self.base, self.log = base, log

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return self.base[i]


def _two_process_worker(out: str) -> None:
    from accelerate import Accelerator

    from etsdm.runs import build_dataset

    cfg = tiny_cfg(3, **{"train.batch_size": 8})
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    ds = _Recording(build_dataset(cfg), Path(out) / f"seen_{rank}.txt")
    trainer = Trainer(cfg, Path(out) / "run", dataset=ds, accelerator=acc, progress=False)
    trainer.train()
    net = acc.unwrap_model(trainer.net)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.save({"w": flat, "world": acc.num_processes}, Path(out) / f"weights_{rank}.pt")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned gloo ranks: seconds on a quiet machine, flaky under heavy CPU contention
@pytest.mark.skipif(os.environ.get("ETSDM_SKIP_DDP") == "1", reason="ETSDM_SKIP_DDP=1")
def test_two_cpu_processes_see_different_data_and_stay_in_sync(tmp_path):
    """Two gloo processes, as `accelerate launch --num_processes 2 --cpu` starts them.

    (accelerate's debug_launcher forks, which can deadlock once torch's thread pool exists in the
    parent; this starts fresh processes instead.)"""
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with patch_environment(world_size=2, master_addr="127.0.0.1", master_port=str(_free_port()),
                           accelerate_mixed_precision="no", accelerate_use_cpu="yes", gloo_socket_ifname="lo",
                           omp_num_threads="1"):
        start_processes(PrepareForLaunch(_two_process_worker, distributed_type="MULTI_CPU"), args=(str(tmp_path),),
                        nprocs=2, start_method="spawn")
    w0, w1 = (torch.load(tmp_path / f"weights_{r}.pt", weights_only=True) for r in (0, 1))
    assert w0["world"] == w1["world"] == 2
    assert torch.equal(w0["w"], w1["w"])  # DDP kept the replicas identical
    # (the first read is the Trainer looking at one item for the data shape)
    seen0 = (tmp_path / "seen_0.txt").read_text().split()[1:]
    seen1 = (tmp_path / "seen_1.txt").read_text().split()[1:]
    assert len(seen0) == len(seen1) == 3 * 4  # 3 steps x micro-batch 4 per process (global 8)
    for k in range(3):  # step by step, the two ranks read different examples
        assert not set(seen0[4 * k : 4 * k + 4]) & set(seen1[4 * k : 4 * k + 4])
    assert latest_checkpoint(tmp_path / "run").name == "step_00000003"


def test_in_memory_batches_equal_the_data_set_items(tmp_path):
    from etsdm.runs import build_dataset
    from etsdm.train.trainer import InMemory

    cfg = tiny_cfg(1)
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert isinstance(trainer.dataset, InMemory)
    ds = build_dataset(cfg)
    sampler = StepBatchSampler(len(ds), 8, seed=cfg.train.seed)
    batches = iter(trainer._loader())
    for k in range(200):  # crosses an epoch boundary (187 batches of 8)
        assert torch.equal(next(batches), torch.stack([ds[i] for i in sampler.indices(k)]))


def test_in_memory_labelled_batches_equal_the_data_set_items(tmp_path):
    from etsdm.data import split_batch
    from etsdm.runs import build_dataset
    from etsdm.train.trainer import InMemory

    cfg = tiny_cfg(1, **{"data.labels": "true"})
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert isinstance(trainer.dataset, InMemory) and trainer.dataset.num_classes == 10
    ds = build_dataset(cfg)
    sampler = StepBatchSampler(len(ds), 8, seed=cfg.train.seed)
    batches = iter(trainer._loader())
    for k in range(3):
        x0, cond = split_batch(next(batches))
        items = [split_batch(ds[i]) for i in sampler.indices(k)]
        assert torch.equal(x0, torch.stack([x for x, _ in items]))
        assert torch.equal(cond["labels"], torch.stack([c["labels"] for _, c in items]))


def test_compile_wraps_the_training_net_only(tmp_path, monkeypatch):
    """train.compile: torch.compile gets the network the optimiser trains; the EMA copy, the
    checkpointed weights (no _orig_mod prefix) and the sampling nets stay the eager module."""
    compiled: list[torch.nn.Module] = []

    class Wrapped(torch.nn.Module):  # stands in for torch.compile's OptimizedModule (no slow compile here)
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner
            self.calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self._orig_mod(*args, **kwargs)

    def fake_compile(module):
        compiled.append(module)
        return Wrapped(module)

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = Trainer(tiny_cfg(1, **{"train.compile": "true"}), tmp_path, progress=False)
    assert compiled == [trainer.raw_net] and isinstance(trainer.net, Wrapped)
    assert trainer.ema.module is not trainer.raw_net and not isinstance(trainer.ema.module, Wrapped)
    trainer.train()
    assert trainer.net.calls > 0  # the loss ran through the compiled net
    keys = weights(latest_checkpoint(tmp_path) / "model.safetensors").keys()
    assert keys == trainer.raw_net.state_dict().keys() and not any("_orig_mod" in k for k in keys)
    assert Trainer(tiny_cfg(1), tmp_path / "eager", progress=False).net.__class__ is not Wrapped
