"""The measuring commands end to end on the analytic specs (no training) and tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from etsdm.cli import main
from etsdm.data import digits_arrays, make_mixture

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is fastest


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_lipschitz_two_analytic_specs_one_figure(tmp_path):
    res = _run("lipschitz", "gmm", "gmm:etsdm", "--t-max", 120, "--samples", 8, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    curves = json.loads((tmp_path / "lipschitz.json").read_text())["curves"]
    assert [c["run"] for c in curves] == ["gmm", "gmm:etsdm"]
    base, shared = (np.asarray(c["K"]) for c in curves)
    assert len(base) == 121 and curves[0]["evaluations_per_seed"] == 2 * 8 * 121
    inside = [t for t in range(100) if t % 20 != 19]
    assert np.all(shared[inside] == 0) and np.all(shared[[19, 39, 59, 79, 99]] > 0)
    assert np.all(base[:100] > 0)
    np.testing.assert_allclose(shared[100:], base[100:], rtol=1e-5)  # t >= t̃: the same function
    assert curves[1]["boundaries"] == [0, 20, 40, 60, 80, 100]
    assert (tmp_path / "lipschitz.png").stat().st_size > 10_000
    # self-describing JSON: what was differentiated, the unit of K (issue 7 items 4, 6)
    assert curves[1]["output"] == "eps" and curves[1]["output_is_network"] and curves[1]["prediction"] == "eps"
    assert curves[1]["K_scale"] == "step" and curves[1]["K_unit"].startswith("per timestep")
    # the summary: mean over [0, t̃) beside the max, and the max off the boundary jumps (issue 13)
    summary = curves[1]["summary"]
    assert summary["window"] == [0, 100] and summary["mean"] == pytest.approx(shared[:100].mean())
    assert summary["max_is_boundary_jump"] and summary["max_off_boundaries"] == 0
    assert "mean" in res.stdout and "(a sub-interval boundary jump), max inside sub-intervals 0 at" in res.stdout


def test_lipschitz_output_option_and_continuous_per_step_scale(tmp_path):
    """--output v converts ε to v (K > 0 inside sub-intervals, flagged as a conversion); a
    continuous run's K is per discrete-equivalent step by default (continuous t = 0.1 is discrete
    step 99: the two agree), and --scale time is T times larger (issue 7 items 4, 6)."""
    res = _run("lipschitz", "gmm:etsdm", "--t-max", 30, "--samples", 4, "--output", "v", "--out", tmp_path / "v")
    assert res.exit_code == 0, res.output
    curve = json.loads((tmp_path / "v" / "lipschitz.json").read_text())["curves"][0]
    assert curve["output"] == "v" and not curve["output_is_network"]
    assert all(k > 0 for k in curve["K"][:19])
    common = ["--samples", 64, "--data", "gmm", "--no-progress"]  # the same x0 for both schedules
    k = {}
    for name, spec, t, extra in [
        ("disc", "gmm", 99, []),
        ("cont", "gmm:continuous", 0.1, []),
        ("time", "gmm:continuous", 0.1, ["--scale", "time"]),
    ]:
        res = _run("lipschitz", spec, "--t-start", t, "--t-max", t, *common, *extra, "--out", tmp_path / name)
        assert res.exit_code == 0, res.output
        k[name] = json.loads((tmp_path / name / "lipschitz.json").read_text())["curves"][0]
    assert k["cont"]["K_scale"] == "step" and "discrete-equivalent step" in k["cont"]["K_unit"]
    assert k["cont"]["K_steps_per_time_unit"] == 1000 and k["time"]["K_steps_per_time_unit"] == 1
    np.testing.assert_allclose(k["cont"]["K"], k["disc"]["K"], rtol=0.01)
    np.testing.assert_allclose(k["time"]["K"], 1000 * np.asarray(k["cont"]["K"]), rtol=1e-9)


def test_lipschitz_estimate_before_starting_and_progress_bar_on_stderr(tmp_path):
    """The network evaluations and the expected time are printed before any measurement, a
    progress bar goes to stderr, and --no-progress hides it (issue 13)."""
    args = ["lipschitz", "gmm", "--t-max", 40, "--samples", 4, "--out", tmp_path]
    shown, hidden = _run(*args), _run(*args, "--no-progress")
    for res in (shown, hidden):
        assert res.exit_code == 0, res.output
        assert "328 network evaluations" in res.stderr and "expected ≈" in res.stderr
        assert res.output.index("expected ≈") < res.output.index("K over t")  # before the results
    assert "seed 0: 100%" in shown.stderr and "seed 0" not in hidden.stderr


def test_stability_two_specs_relative_difference(tmp_path):
    res = _run(
        "stability",
        "gmm",
        "gmm:etsdm",
        "--t",
        50,
        "--samples",
        32,
        "--seeds",
        "0,1",
        "--labels",
        "DDPM,E-TSDM",
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "stability.json").read_text())
    a, b = out["results"]
    assert a["label"] == "DDPM" and len(a["error_per_seed"]) == 2
    np.testing.assert_allclose(b["relative_difference_to_reference"], np.array(b["error"]) / np.array(a["error"]) - 1)
    assert (tmp_path / "stability.png").is_file()
    assert a["metric"] == "mse" and "squared" in a["metric_definition"]  # issue 7 item 5


def test_stability_metric_option_and_full_table_headers(tmp_path):
    """--metric rms is recorded in the JSON; long labels are printed whole in the table header,
    which is as wide as its widest cell (issue 13: headers were cut mid-word)."""
    labels = "exact eps-star baseline with a long name,exact E-TSDM optimum with a long name"
    args = ["stability", "gmm", "gmm:etsdm", "--t", 50, "--samples", 8, "--seeds", 0, "--labels", labels]
    mse, rms = _run(*args, "--out", tmp_path / "m"), _run(*args, "--metric", "rms", "--out", tmp_path / "r")
    for res in (mse, rms):
        assert res.exit_code == 0, res.output
        header, *rows = res.stdout.splitlines()[:5]
        assert all(label in header for label in labels.split(","))
        assert all(len(row) == len(header) for row in rows)
    assert mse.stdout.startswith("scale (MSE)") and rms.stdout.startswith("scale (RMS)")
    m, r = (json.loads((tmp_path / d / "stability.json").read_text())["results"][0] for d in "mr")
    assert m["metric"] == "mse" and r["metric"] == "rms"
    assert all(e_m < e_r for e_m, e_r in zip(m["error"], r["error"], strict=True))  # errors < 1: MSE < RMS


def test_schedules_table_and_figures(tmp_path):
    res = _run("schedules", "--T", 200, "--pdf", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "schedules.json").read_text())
    assert {r["schedule"] for r in out["table"]} == {"linear", "quadratic", "cosine", "cosine-shift", "zero-snr"}
    assert set(out["snr_ratio_modified"]) == {"linear", "quadratic", "cosine"}
    for name in ("snr", "snr_ratio_modified", "remap_snr"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.pdf").is_file()


def test_evaluate_gmm_samples(tmp_path):
    gmm = make_mixture(None)
    x = gmm.sample(300, torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    np.savez(tmp_path / "s.npz", samples=x)
    res = _run("evaluate", tmp_path / "s.npz", "--ref", "gmm", "--seeds", "0,1", "--out", tmp_path / "e")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "e" / "evaluate.json").read_text())["gmm"]
    assert out["spread_ratio"]["n"] == 300 and abs(out["spread_ratio"]["value"] - 1) < 0.15
    assert "true-vs-true" in res.output


def test_features_then_evaluate_digits_fid_with_floor(tmp_path):
    res = _run("features", "--out", tmp_path / "f.safetensors", "--epochs", 3)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "f.json").read_text())["n_test"] == 300
    x_te, _ = digits_arrays("test")
    noisy = np.clip(x_te[:, None] + 0.4 * np.random.default_rng(0).standard_normal(x_te[:, None].shape), -1, 1)
    np.savez(tmp_path / "s.npz", samples=noisy.astype(np.float32))
    res = _run(
        "evaluate",
        tmp_path / "s.npz",
        "--ref",
        "digits",
        "--features",
        tmp_path / "f.safetensors",
        "--n",
        100,
        "--seeds",
        "0,1",
        "--out",
        tmp_path / "e",
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "e" / "evaluate.json").read_text())["fid-digits"]
    assert out["n"] == 100 and out["fid"] > out["floor"] > 0 and "FID-100" in res.output
    assert (tmp_path / "e" / "samples.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["lipschitz", "no/such/run"], "no such run"),
        (["lipschitz", "gmm", "--dt", "0.5"], "whole number"),
        (["stability", "gmm", "--scales", "0.1,-2"], "positive"),
        (["stability", "gmm", "--reference", "3"], "--reference"),
        (["stability", "gmm", "--metric", "mae"], "--metric"),
        (["lipschitz", "gmm", "--output", "score"], "--output"),
        (["lipschitz", "gmm", "gmm:continuous"], "separate calls"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_evaluate_bad_samples_file(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.zeros((4, 2), np.float32))
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "s.npz"), "--ref", "gmm", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no array 'samples'" in result.output


def test_metric_names_in_sync_and_library_evaluate_psnr(tmp_path):
    from etsdm.cli.measure import METRICS as CLI_METRICS
    from etsdm.metrics import evaluate_samples, format_results
    from etsdm.metrics.evaluate import METRICS

    assert CLI_METRICS == METRICS
    target = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = evaluate_samples(target + 0.02, target, seeds=(0,))
    assert set(res) >= {"psnr", "ssim"} and res["psnr"]["mean"] == pytest.approx(40.0, abs=0.2)
    assert any(line.startswith("PSNR") for line in format_results(res))
    with pytest.raises(ValueError, match="samples holds 2 images and targets 4"):
        evaluate_samples(target[:2], target, ["psnr"])
    with pytest.raises(ValueError, match=r"a.npz has \(C, H, W\) = \(1, 8, 8\), b.npz \(1, 16, 16\)"):
        evaluate_samples(target[:, :, :8, :8], target, ["psnr"], pair_names=("a.npz", "b.npz"))
    from etsdm.metrics import psnr

    overshoot = 3 * target  # image metrics clamp to [-1, 1], as saving the images would
    clamped = float(psnr(overshoot.clamp(-1, 1), target).mean())
    assert evaluate_samples(overshoot, target, ["psnr"])["psnr"]["mean"] == pytest.approx(clamped, rel=1e-12)
    np.savez(tmp_path / "sr.npz", samples=(target + 0.02).numpy(), targets=target.numpy())
    np.savez(tmp_path / "ref.npz", images=target.numpy())
    out = _run("evaluate", tmp_path / "sr.npz", "--ref", tmp_path / "ref.npz", "--out", tmp_path / "e")
    assert out.exit_code == 0 and "PSNR: 40" in out.output, out.output


def test_diffusers_folder_needs_and_takes_data(tmp_path):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )
    unet.save_pretrained(tmp_path / "unet")
    res = CliRunner().invoke(main, ["lipschitz", str(tmp_path / "unet"), "--t-max", "3", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--data" in res.output, res.output
    args = ["--data", "digits", "--t-max", 3, "--samples", 2, "--out", tmp_path / "o"]
    res = _run("lipschitz", tmp_path / "unet", *args)
    assert res.exit_code == 0, res.output
    curve = json.loads((tmp_path / "o" / "lipschitz.json").read_text())["curves"][0]
    assert len(curve["K"]) == 4 and all(k > 0 for k in curve["K"])
