"""Crash safety (issue 13): a kill at any point of a checkpoint write or of the final outputs, a
truncated file, a full disk, a half-made import or a config change on resume never loses work, never
needs hand repair, and never prints a traceback.

A kill is simulated in-process: the writing function is patched to raise :class:`Killed`, a
BaseException that no ``except Exception`` cleanup catches (like SIGKILL, which runs none). Every run
is 4 steps of the tiny MLP on 64 mixture points (checkpoints at steps 2 and 4), well under a second.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from etsdm.cli import main
from etsdm.config import ConfigError, configs_dir, load_config
from etsdm.runs import import_diffusers, load_model
from etsdm.train import checkpoint as ckpt_mod
from etsdm.train.checkpoint import CheckpointError, CheckpointWriteError, latest_checkpoint, load_state
from etsdm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")

SETS = ["data.num_samples=64", "model.preset=tiny", "train.steps=4", "train.batch_size=16", "train.checkpoint_every=2",
        "train.log_every=1", "train.tensorboard=false", "train.lr=1e-2", "train.keep_last=3", "sample.sampler=ddim",
        "sample.nfe=2", "sample.num=8"]
CONFIG = configs_dir() / "gmm_etsdm.yaml"


class Killed(BaseException):
    """The process dies here."""


def cfg(*extra: str):
    return load_config(CONFIG, [*SETS, *extra])


def train(run: Path, *, resume: bool = False, steps: int = 4):
    return Trainer(cfg(f"train.steps={steps}"), run, resume=resume, progress=False).train()


def cli(*args: str):
    """Run ``etsdm ARGS``; a user-facing fault must end in a message, never a traceback."""
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert "Traceback" not in res.output
    return res


def cli_train(run: Path, *extra: str):
    sets = [x for s in SETS for x in ("--set", s)]
    return cli("train", str(CONFIG), *sets, "--out", str(run), "--no-progress", "--threads", "1", *extra)


def assert_same_run(a: Path, b: Path) -> None:
    """The newest checkpoints of two runs: identical weights, EMA weights and Adam moments."""
    ca, cb = latest_checkpoint(a), latest_checkpoint(b)
    assert ca.name == cb.name
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(ca / f)), load_file(str(cb / f))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    sa, sb = load_state(ca)["optimizer"]["state"], load_state(cb)["optimizer"]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in ("exp_avg", "exp_avg_sq"))


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 4-step run."""
    run = tmp_path_factory.mktemp("ref") / "run"
    train(run)
    return run


@pytest.fixture
def finished(reference, tmp_path) -> Path:
    """A copy of the uninterrupted run to damage."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def kill_in(monkeypatch, name: str, *, step: int = 4, write_half: bool = False) -> None:
    """Make checkpoint.<name> die when it writes checkpoint ``step`` (after half a file, if asked)."""
    real = getattr(ckpt_mod, name)
    tag = f"step_{step:08d}"

    def dying(*args, **kwargs):
        if not any(isinstance(a, (str, Path)) and tag in str(a) for a in (*args, *kwargs.values())):
            return real(*args, **kwargs)
        if write_half:  # save_file(tensors, path): the file exists, cut in the middle
            real(*args, **kwargs)
            path = Path(args[1])
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise Killed

    monkeypatch.setattr(ckpt_mod, name, dying)


# --- a kill in each phase of a checkpoint write -----------------------------------------------------
@pytest.mark.parametrize("phase", ["weights half written", "before the rename"])
def test_kill_during_checkpoint_write_then_resume_is_bit_exact(phase, reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    if phase == "weights half written":
        kill_in(monkeypatch, "save_file", write_half=True)
    else:
        kill_in(monkeypatch, "_publish")
    with pytest.raises(Killed):
        train(run)
    monkeypatch.undo()
    assert latest_checkpoint(run).name == "step_00000002"
    assert leftovers(run) == [f".tmp_step_00000004_{os.getpid()}"]  # what a SIGKILL leaves
    assert load_model(run).step == 2  # sample works meanwhile
    res = train(run, resume=True)
    assert res.trained == 2 and res.outputs_written
    assert_same_run(run, reference)
    assert leftovers(run) == []
    assert metric_steps(run) == [1, 2, 3, 4]  # the killed run's lines 3, 4 were dropped, not repeated


def test_kill_after_the_rename_keeps_the_new_checkpoint(reference, tmp_path, monkeypatch):
    """Killed between the rename and the `latest` pointer: step 4 is complete and is used."""
    run = tmp_path / "run"
    kill_in(monkeypatch, "_point_latest")
    with pytest.raises(Killed):
        train(run)
    monkeypatch.undo()
    assert (run / "checkpoints" / "latest").read_text() == "step_00000002"
    assert load_model(run).step == 4
    res = train(run, resume=True)
    assert res.trained == 0 and res.outputs_written  # nothing to train, but the outputs were missing
    assert_same_run(run, reference)
    assert (run / "samples" / "step_00000004.npz").is_file() and (run / "loss.png").is_file()


def test_meta_json_is_complete_before_the_rename(tmp_path, monkeypatch):
    """meta.json (with data_shape) is final inside the temporary folder, not rewritten afterwards."""
    seen = {}
    real = ckpt_mod._publish

    def spy(tmp, final):
        seen[final.name] = json.loads((tmp / "meta.json").read_text())
        return real(tmp, final)

    monkeypatch.setattr(ckpt_mod, "_publish", spy)
    train(tmp_path / "run", steps=2)
    meta = seen["step_00000002"]
    assert meta["data_shape"] == [2] and meta["step"] == 2 and set(meta["files"]) >= {"model.safetensors", "state.pt"}
    assert json.loads((latest_checkpoint(tmp_path / "run") / "meta.json").read_text()) == meta


# --- damaged files in the newest checkpoint -----------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "state.pt", "meta.json"])
def test_damaged_newest_checkpoint_falls_back(name, legacy, finished, reference, tmp_path):
    """Truncated weights / state, or the empty meta.json an old trainer left after a kill: resume and
    sample use step 2 and name the damaged file; a resume then equals the uninterrupted run."""
    ckpt = finished / "checkpoints" / "step_00000004"
    if legacy:  # written before checkpoints had a manifest: the load itself must catch it
        meta = json.loads((ckpt / "meta.json").read_text())
        del meta["files"]
        (ckpt / "meta.json").write_text(json.dumps(meta))
    f = ckpt / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2] if name != "meta.json" else b"")
    with pytest.raises(CheckpointError, match=name):  # the checkpoint itself names the file
        load_model(ckpt)
    model = load_model(finished)
    assert model.step == 2 and name in model.notes[0] and "using step_00000002" in model.notes[0]
    res = cli("sample", str(finished), "--nfe", "2", "--num", "4", "--out", str(tmp_path / "s.npz"))
    assert res.exit_code == 0 and name in res.output and "step_00000002" in res.output
    res = cli("sample", str(ckpt), "--nfe", "2", "--num", "4", "--out", str(tmp_path / "t.npz"))
    assert res.exit_code == 2 and name in res.output
    trainer = Trainer(cfg(), finished, resume=True, progress=False)
    assert trainer.step == 2 and name in trainer.notes[0]
    assert trainer.train().trained == 2
    assert_same_run(finished, reference)



@pytest.mark.parametrize("header", [b"{not json", b'{"w": {"dtype": "F32"}}', b"[1, 2]"])
def test_corrupt_safetensors_header_is_named(header, finished):
    """(Without a manifest, so the header itself is checked; with one the size already differs.)"""
    ckpt = finished / "checkpoints" / "step_00000004"
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["files"]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    f = ckpt / "ema.safetensors"
    f.write_bytes(len(header).to_bytes(8, "little") + header)
    assert ckpt_mod.checkpoint_problem(ckpt) == f"{f} has a corrupt header"
    assert latest_checkpoint(finished).name == "step_00000002"

def test_every_checkpoint_damaged_is_a_clear_error(finished, tmp_path):
    for ckpt in ckpt_mod.step_dirs(finished):
        (ckpt / "model.safetensors").write_bytes(b"")
    res = cli("sample", str(finished), "--nfe", "2", "--num", "4", "--out", str(tmp_path / "s.npz"))
    assert res.exit_code == 2 and "no complete checkpoint" in res.output and "model.safetensors" in res.output
    res = cli_train(finished, "--resume")
    assert res.exit_code == 1 and "no complete checkpoint" in res.output and "step_00000002" in res.output



def test_resume_drops_the_killed_runs_metrics_lines(finished, tmp_path):
    """Lines past the resumed checkpoint (and one a kill cut short) go; the loss curve never steps back."""
    from etsdm.train.outputs import plot_loss_curve

    with open(finished / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    plot_loss_curve(finished / "metrics.jsonl", tmp_path / "loss.png")  # a cut line is skipped, not fatal
    shutil.rmtree(finished / "checkpoints" / "step_00000004")  # the resume starts at step 2
    train(finished, resume=True)
    assert metric_steps(finished) == [1, 2, 3, 4]

# --- final outputs --------------------------------------------------------------------------------
def test_kill_during_final_sampling_is_finished_by_resume(finished, monkeypatch):
    for f in ("loss.png", "samples/step_00000004.png", "samples/step_00000004.npz"):
        (finished / f).unlink()  # as the kill left them: the grid never written

    def killed(self):
        raise Killed

    monkeypatch.setattr(Trainer, "preview", killed)
    with pytest.raises(Killed):
        train(finished, resume=True)
    monkeypatch.undo()
    res = cli_train(finished, "--resume")
    assert res.exit_code == 0, res.output
    assert "nothing to train" in res.output and "wrote its missing final outputs" in res.output
    assert "trained 4 steps" not in res.output
    assert (finished / "samples" / "step_00000004.npz").is_file() and (finished / "loss.png").is_file()
    res = cli_train(finished, "--resume")
    assert "nothing to train" in res.output and "its outputs are complete" in res.output


def test_preview_samples_of_images_are_clamped(tmp_path, monkeypatch):
    """The trainer's preview .npz holds images in [-1, 1], as `etsdm sample` saves them."""
    import etsdm.runs

    img_cfg = load_config(None, ["train.steps=1", "train.tensorboard=false", "sample.num=4"])  # digits: images
    trainer = Trainer(img_cfg, tmp_path, net=torch.nn.Linear(1, 1), dataset=torch.zeros(16, 1, 8, 8), progress=False)
    monkeypatch.setattr(etsdm.runs, "generate", lambda model, num, **kw: torch.full((num, 1, 8, 8), 45.0))
    x = np.load(trainer.preview().with_suffix(".npz"))["samples"]
    assert x.shape == (4, 1, 8, 8) and x.max() == 1.0


# --- leftovers and a full disk --------------------------------------------------------------------
def test_leftovers_of_killed_writes_are_removed(finished):
    root = finished / "checkpoints"
    (root / ".tmp_step_00000006_99999").mkdir()
    (root / ".tmp_step_00000006_99999" / "model.safetensors").write_bytes(b"x" * 1000)
    (root / ".latest.tmp99999").write_text("step_")
    (root / ".old_step_00000004_99999").mkdir()  # a re-save of step 4 cut between its two renames
    train(finished, resume=True)  # nothing to train; still clears the leftovers
    assert leftovers(finished) == []
    assert latest_checkpoint(finished).name == "step_00000004"


def test_disk_full_removes_its_partial_write_and_resume_retries(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = ckpt_mod.save_file

    def full_disk(tensors, path):
        if "step_00000004" in str(path):
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path)

    monkeypatch.setattr(ckpt_mod, "save_file", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        train(run)
    assert leftovers(run) == []  # the partial checkpoint does not keep the disk full
    res = cli_train(run, "--resume")
    assert res.exit_code == 1 and "No space left on device" in res.output and "--resume" in res.output
    monkeypatch.undo()
    res = cli_train(run, "--resume")
    assert res.exit_code == 0, res.output
    assert_same_run(run, reference)


def test_disk_full_while_logging_is_a_message(tmp_path, monkeypatch):
    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.run_dir / "metrics.jsonl"))

    monkeypatch.setattr(Trainer, "_log", full)
    res = cli_train(tmp_path / "run", "--set", "train.steps=1")
    assert res.exit_code == 1 and "No space left on device" in res.output and "--resume" in res.output


# --- config changes on resume ----------------------------------------------------------------------
def test_resume_refuses_to_change_what_defines_the_run(finished):
    before = (finished / "config.yaml").read_text()
    res = cli_train(finished, "--resume", "--set", "diffusion.condition.kind=identity", "--set", "train.lr=0.5")
    assert res.exit_code == 1
    assert "diffusion.condition.kind (etsdm -> identity)" in res.output and "train.lr (0.01 -> 0.5)" in res.output
    assert (finished / "config.yaml").read_text() == before  # not overwritten
    with pytest.raises(ConfigError, match="model.preset"):
        Trainer(cfg("model.preset=small"), finished, resume=True, progress=False)
    # what only stops, logs or previews the run may change: extend it by 2 steps
    res = cli_train(finished, "--resume", "--set", "train.steps=6", "--set", "train.log_every=2",
                    "--set", "sample.nfe=3")
    assert res.exit_code == 0 and "trained 2 steps (to step 6)" in res.output
    assert "steps: 6" in (finished / "config.yaml").read_text()


# --- import ----------------------------------------------------------------------------------------
@pytest.fixture
def diffusers_dir(tmp_path) -> Path:
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1)
    unet.save_pretrained(str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_failed_import_leaves_nothing_and_the_retry_works(damage, diffusers_dir, tmp_path):
    weights = diffusers_dir / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(good[: len(good) // 2])
    out = tmp_path / "imported"
    res = cli("import", str(diffusers_dir), str(out))
    assert res.exit_code == 1 and "does not load" in res.output and "nothing was imported" in res.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["hf"]
    weights.write_bytes(good)
    res = cli("import", str(diffusers_dir), str(out))
    assert res.exit_code == 0, res.output
    assert load_model(out).shape == (1, 8, 8)


def test_import_removes_a_killed_imports_leftover(diffusers_dir, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".imported.tmp{dead.pid}"  # etsdm.folders.temporary_folder of a killed import
    (stale / "diffusers").mkdir(parents=True)
    import_diffusers(diffusers_dir, tmp_path / "imported")
    assert not stale.exists() and (tmp_path / "imported" / "etsdm.json").is_file()


# --- multi-process shutdown ------------------------------------------------------------------------
def test_train_waits_for_every_process_and_cli_ends_training(tmp_path, monkeypatch):
    """All ranks meet after the final outputs (rank 0 samples while the others would exit), and
    `etsdm train` ends the accelerate run (destroys the process group: a gloo run hung at exit)."""
    from accelerate import Accelerator

    events: list[str] = []
    real_preview, real_wait = Trainer.preview, Accelerator.wait_for_everyone
    monkeypatch.setattr(Trainer, "preview", lambda self: events.append("preview") or real_preview(self))
    monkeypatch.setattr(Accelerator, "wait_for_everyone", lambda self: events.append("wait") or real_wait(self))
    monkeypatch.setattr(Accelerator, "end_training", lambda self: events.append("end"))
    res = cli_train(tmp_path / "run", "--set", "train.steps=2")
    assert res.exit_code == 0, res.output
    assert events[-3:] == ["preview", "wait", "end"]

