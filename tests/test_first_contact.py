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
    assert not (tmp_path / "s.eval.json").exists()


def test_spread_below_float_noise_prints_as_zero():
    from etsdm.metrics import format_results

    fid = {"n": 300, "fid": 7.937, "fid_std": 7.9e-10, "floor": 5.2, "floor_std": 0.31}
    line = format_results({"fid-digits": fid})[0]
    assert "7.937 ± 0 " in line and "e-10" not in line and "5.2 ± 0.31" in line
