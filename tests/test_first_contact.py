"""First contact: what a new user meets first must fail loudly and clearly, never silently.

Each test covers one case of issue 13 (empty configs, the default job when installed, samples that
are NaN / integer / on the wrong scale, overwriting exports and samples, bad --out / --device /
--threads, grayscale folders, folder data without a reference) and checks that the CLI answers a
user error with a message, never a Python traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import etsdm
from etsdm import config as config_module
from etsdm.cli import main
from etsdm.config import ConfigError, configs_dir, load_config, packaged_configs

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(*args) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


# --- configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"mine\.yaml is empty"):
        load_config(path)
    res = _run("train", path, "--print-config")
    assert res.exit_code == 2 and "mine.yaml is empty" in res.output


def test_default_job_is_etsdm_without_the_repository_configs_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "configs_dir", lambda: tmp_path / "no-configs-here")
    assert load_config().diffusion.condition.kind == "etsdm"
    res = _run("train", "--print-config")
    assert res.exit_code == 0 and "kind: etsdm" in res.output and "name: digits" in res.output


def test_toy_configs_ship_in_the_package_once():
    package = Path(etsdm.__file__).resolve().parent
    assert packaged_configs().resolve() == package / "configs"
    for name in ("digits_etsdm", "digits_baseline", "gmm_etsdm", "gmm_baseline"):
        shipped = packaged_configs() / f"{name}.yaml"
        assert shipped.is_file()
        # the repository's configs/<name>.yaml is the same file (a link), not a second copy
        assert (configs_dir() / f"{name}.yaml").resolve() == shipped.resolve()
    text = (package.parents[1] / "pyproject.toml").read_text()
    assert 'etsdm = ["configs/*.yaml"]' in text  # package data: in the wheel, not only in the tree


def test_missing_packaged_default_is_an_error_not_baseline_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "packaged_configs", lambda: tmp_path)
    with pytest.raises(ConfigError, match="default config .* missing"):
        load_config()


# --- evaluate: samples no metric can use ----------------------------------------------------------
def _npz(path: Path, x: np.ndarray) -> Path:
    np.savez(path, samples=x)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), "NaN"),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.inf, x), "infinite"),
        (lambda x: ((x + 1) * 127.5).round().astype(np.uint8), "integer dtype uint8"),
        (lambda x: (x + 1) * 127.5, "expected images in [-1, 1]"),
    ],
    ids=["nan", "inf", "uint8", "0-255-float"],
)
def test_evaluate_refuses_samples_no_metric_can_use(tmp_path, make, message):
    x = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    res = _run("evaluate", _npz(tmp_path / "s.npz", make(x)), "--ref", "digits", "--out", tmp_path / "e")
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "e").exists()  # refused before any work


def test_evaluate_garbage_npz_is_named(tmp_path):
    bad = tmp_path / "s.npz"
    bad.write_bytes(b"this is not a zip archive at all")
    res = _run("evaluate", bad, "--ref", "gmm", "--out", tmp_path / "e")
    assert res.exit_code == 2 and "is not an .npz file" in res.output and "pickle" not in res.output


def test_evaluate_slight_overshoot_is_clamped_with_a_warning(tmp_path):
    target = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "s.npz", samples=1.2 * target, targets=target)
    res = _run("evaluate", tmp_path / "s.npz", "--ref", tmp_path / "s.npz", "--metric", "psnr", "--out", tmp_path)
    assert res.exit_code == 0 and "warning: samples overshoot [-1, 1]" in res.output and "clamped" in res.output
    assert json.loads((tmp_path / "evaluate.json").read_text())["warnings"]


def test_sample_evaluate_refuses_nan_samples(monkeypatch, tmp_path):
    import etsdm.runs

    monkeypatch.setattr(etsdm.runs, "generate", lambda *a, **k: torch.full((4, 2), float("nan")))
    res = _run("sample", "gmm", "--num", 4, "--nfe", 2, "--out", tmp_path / "s.npz", "--evaluate", "--threads", 1)
    assert res.exit_code == 1 and "NaN" in res.output, res.output
    assert "warning: 4 of 4 samples contain NaN or inf" in res.stderr
    assert not (tmp_path / "s.eval.json").exists()


def test_spread_below_float_noise_prints_as_zero():
    from etsdm.metrics import format_results

    fid = {"n": 300, "fid": 7.937, "fid_std": 7.9e-10, "floor": 5.2, "floor_std": 0.31}
    line = format_results({"fid-digits": fid})[0]
    assert "7.937 ± 0 " in line and "e-10" not in line and "5.2 ± 0.31" in line


# --- outputs: never overwrite silently, check before work -----------------------------------------
TINY_NET = ("model.overrides={base_channels: 8, channel_mult: [1], layers_per_block: 1, attention_resolutions: [], "
            "attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}")


def _tiny_run(path: Path, condition: str = "etsdm") -> Path:
    """A digits run with one (untrained) checkpoint, written without training."""
    from etsdm.config import dump_config
    from etsdm.runs import build_net
    from etsdm.train.checkpoint import save_checkpoint

    cfg = load_config(None, [TINY_NET, f"diffusion.condition.kind={condition}"])
    torch.manual_seed(0)
    net = build_net(cfg, (1, 8, 8))
    save_checkpoint(path, 1, model=net, ema=None, ema_updates=0, state={}, config_yaml=dump_config(cfg))
    return path


def test_export_refuses_an_existing_export_and_force_replaces_it_whole(tmp_path):
    etsdm_run, base_run = _tiny_run(tmp_path / "e"), _tiny_run(tmp_path / "b", "identity")
    out = tmp_path / "hf"
    assert _run("export", etsdm_run, out).exit_code == 0
    (out / "stray.txt").write_text("from an older export")
    res = _run("export", base_run, out)
    assert res.exit_code == 1 and "already holds files" in res.output and "--force" in res.output
    assert json.loads((out / "etsdm.json").read_text())["condition"]["kind"] == "etsdm"  # untouched
    assert _run("export", base_run, out, "--force").exit_code == 0
    assert json.loads((out / "etsdm.json").read_text())["condition"]["kind"] == "identity"
    assert not (out / "stray.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    res = _run("export", base_run, other, "--force")
    assert res.exit_code == 1 and "not an etsdm export" in res.output and (other / "notes.txt").exists()


def test_exported_files_have_ordinary_modes(tmp_path):
    import os

    out = tmp_path / "hf"
    assert _run("export", _tiny_run(tmp_path / "r"), out).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_mode & 0o777 == 0o666 & ~umask  # 0644 under the usual umask 022, not 0600
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_sample_default_output_is_not_overwritten_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("sample", "gmm", "--num", 8, "--nfe", 2, "--threads", 1)
    res = _run(*args, "--evaluate", "--eval-seeds", 0)
    out = Path("samples") / "gmm-ddim-2-seed0.npz"
    assert res.exit_code == 0 and str(out) in res.output and out.with_suffix(".eval.json").exists()
    res = _run(*args, "--seed", 0)
    assert res.exit_code == 2 and "already exist" in res.output and "--force" in res.output
    res = _run(*args, "--force")
    assert res.exit_code == 0 and out.exists() and out.with_suffix(".png").exists()
    assert not out.with_suffix(".eval.json").exists()  # the stale metrics of the earlier samples are gone


def test_sample_help_names_the_real_default_output():
    res = _run("sample", "--help")
    assert "RUN/samples/<sampler>-<nfe>-seed<seed>.npz" in " ".join(res.output.split())


def test_sample_unwritable_out_fails_before_sampling(tmp_path, monkeypatch):
    import etsdm.runs

    def no_sampling(*a, **k):
        raise AssertionError("sampled before checking --out")

    monkeypatch.setattr(etsdm.runs, "generate", no_sampling)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = _run("sample", "gmm", "--num", 4, "--out", blocker / "s.npz", "--threads", 1)
    assert res.exit_code == 1 and "cannot write to" in res.output, res.output


@pytest.mark.parametrize("device, message", [("foo", "is not a torch device"), ("cuda", "no CUDA device")])
def test_bad_device_is_a_named_error(device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = _run("sample", "gmm", "--num", 2, "--device", device)
    assert res.exit_code == 2 and message in res.output and "--device" in res.output


def test_threads_auto_is_one_for_small_models_and_follows_the_load_otherwise(monkeypatch):
    import os

    from etsdm.cli import run as run_module

    small = torch.nn.Linear(10, 10)
    try:
        assert run_module._set_threads("auto", small) == "torch CPU threads: 1 (auto: small model, 0.00011M parameters)"
        monkeypatch.setattr(run_module, "SMALL_MODEL", 10)  # now the same model counts as large
        monkeypatch.setattr(os, "cpu_count", lambda: 4)
        monkeypatch.setattr(os, "getloadavg", lambda: (3.6, 0.0, 0.0))
        assert run_module._set_threads("auto", small).startswith("torch CPU threads: 1 (auto: busy CPU")
        monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert run_module._set_threads("auto", small) == "torch CPU threads: 4 (auto: idle CPU, 4 cores)"
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(1)
    res = _run("sample", "gmm", "--num", 2, "--nfe", 1, "--threads", "two")
    assert res.exit_code == 2 and "expected 'auto' or a positive integer" in res.output


# --- folder data: inferred format -----------------------------------------------------------------
def _gray_folder(root: Path, n: int = 6, side: int = 8) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L").save(root / f"{i}.png")
    return root


def test_train_infers_a_grayscale_folder_and_says_so(tmp_path):
    root = _gray_folder(tmp_path / "gray", side=12)
    res = _run("train", "--set", "data.name=folder", "--set", f"data.root={root}", "--print-config")
    assert res.exit_code == 0, res.output
    cfg = __import__("yaml").safe_load(res.stdout)
    assert (cfg["data"]["channels"], cfg["data"]["resolution"]) == (1, 8)
    assert "data: channels=1 (6 of 6 inspected images are grayscale)" in res.stderr
    res = _run("train", "--set", "data.name=folder", "--set", f"data.root={tmp_path / 'none'}", "--print-config")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_train_fields_lists_types_and_allowed_values():
    res = _run("train", "--fields")
    lines = {line.split()[0]: line for line in res.output.splitlines()}
    assert "one of identity|etsdm|remap" in lines["diffusion.condition.kind"]
    assert "integer in [0, inf)" in lines["train.steps"] and "number in [0, 1]" in lines["train.ema_rate"]
    assert "string or null" in lines["data.root"] and "true|false" in lines["data.hflip"]


# --- folder data: a reference for FID -------------------------------------------------------------
def test_evaluate_against_an_image_folder_uses_its_own_feature_net(tmp_path):
    root = _gray_folder(tmp_path / "gray", n=12)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    res = _run("evaluate", _npz(tmp_path / "s.npz", x), "--ref", root, "--seeds", "0,1", "--out", tmp_path / "e")
    assert res.exit_code == 0, res.output
    assert "feature space: a CNN trained now on the reference images (rotation prediction)" in res.output
    assert "FID-6 (own features)" in res.output and "a random split of the reference images" in res.output
    out = json.loads((tmp_path / "e" / "evaluate.json").read_text())["fid-own"]
    assert out["n_reference"] == 12 and np.isfinite(out["fid"]) and out["feature_net"]["n_val"] == 2


def test_sample_evaluate_on_a_folder_run_uses_its_held_out_images(tmp_path):
    from etsdm.config import dump_config
    from etsdm.runs import build_net, resolve_data
    from etsdm.train.checkpoint import save_checkpoint

    root = _gray_folder(tmp_path / "gray", n=12)
    cfg, _ = resolve_data(load_config(None, [TINY_NET, "data.name=folder", f"data.root={root}", "data.holdout=4"]))
    net = build_net(cfg, (1, 8, 8))
    save_checkpoint(tmp_path / "run", 1, model=net, ema=None, ema_updates=0, state={}, config_yaml=dump_config(cfg))
    res = _run("sample", tmp_path / "run", "--num", 6, "--nfe", 1, "--evaluate", "--eval-seeds", 0, "--threads", 1)
    assert res.exit_code == 0, res.output
    assert f"reference: 8 training images of {root} (n=8); floor from held-out images" in res.output
    assert "FID-4 (own features)" in res.output
    saved = json.loads((tmp_path / "run" / "samples" / "ddim-1-seed0.eval.json").read_text())
    assert saved["fid-own"]["n"] == 4


# --- no traceback for a user error, anywhere ------------------------------------------------------
def _user_errors(tmp: Path) -> list[list]:
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "bad.yaml").write_text("train: {steps: [\n")
    (tmp / "a-file").write_text("")
    (tmp / "no-images").mkdir()
    np.savez(tmp / "s.npz", samples=np.zeros((4, 1, 8, 8), np.float32))
    return [
        ["train", tmp / "list.yaml", "--print-config"],
        ["train", tmp / "bad.yaml", "--print-config"],
        ["train", "--set", "data.name=folder", "--print-config"],
        ["train", "--set", "data.name=folder", "--set", f"data.root={tmp / 'a-file'}", "--print-config"],
        ["train", "--set", "data.name=folder", "--set", f"data.root={tmp / 'no-images'}", "--print-config"],
        ["train", "--set", "train.steps=-1", "--print-config"],
        ["sample", tmp / "no-such-run"],
        ["sample", "gmm", "--threads", "0"],
        ["sample", "gmm", "--device", "cuda:99"],
        ["evaluate", tmp / "s.npz", "--ref", tmp / "nothing-here"],
        ["evaluate", tmp / "s.npz", "--ref", tmp / "no-images", "--out", tmp / "e"],
        ["evaluate", tmp / "s.npz", "--ref", "digits", "--metric", "gmm", "--out", tmp / "e"],
        ["export", tmp / "no-such-run", tmp / "hf"],
        ["export", tmp / "a-file", tmp / "hf"],
        ["features", "--epochs", "0"],
    ]


def test_user_errors_never_print_a_traceback(tmp_path):
    for args in _user_errors(tmp_path):
        res = _run(*args)  # asserts: no traceback, no exception other than click's exit
        assert res.exit_code in (1, 2), (args, res.output)
        assert "Error: " in res.output, (args, res.output)


def test_export_into_an_unwritable_place_is_a_named_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    res = _run("export", _tiny_run(tmp_path / "r"), tmp_path / "a-file" / "hf")
    assert res.exit_code == 1 and "a-file" in res.output


def test_gitignore_and_readme_first_contact_facts():
    import re

    root = Path(__file__).resolve().parents[1]
    ignored = (root / ".gitignore").read_text().split()
    assert {"/exported/", "/reports/", "/samples/"} <= set(ignored)
    readme = (root / "README.md").read_text()
    counts = set(re.findall(r"≈ (\d+) tests", readme))
    assert len(counts) == 1, f"the README gives different test counts: {counts}"
    assert "runs/digits-etsdm/samples/dpm-solver-3-20-seed0.npz" in readme  # where `sample` writes
