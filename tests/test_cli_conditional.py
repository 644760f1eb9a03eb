"""The command line on conditional and latent runs (issue 10): super-resolution end to end
(`sr-pairs` -> `sample --lowres` -> `evaluate --targets`, Fig. A12 in three commands),
class-conditional sampling with labels and guidance, `lipschitz` / `stability` / `evaluate` on SR,
class-conditional and latent runs, and `train` on an autoencoder config. Each run is trained for
two steps on a tiny UNet (the numbers mean nothing; shapes, order, pairing and wiring do)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from etsdm.cli import main
from etsdm.config import configs_dir

CONFIGS = configs_dir()
FAST = ["--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "train.tensorboard=false",
        "--set", "train.checkpoint_every=2", "--set", "sample.sampler=ddim", "--set", "sample.nfe=2",
        "--set", "sample.num=4", "--no-progress"]
SAMPLE = ["--sampler", "ddim", "--nfe", "2", "--batch", "64"]


def invoke(*args) -> object:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


def ok(*args) -> object:
    res = invoke(*args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _train(tmp_path_factory, config: str, name: str, *extra: str) -> Path:
    out = tmp_path_factory.mktemp(name) / "run"
    ok("train", CONFIGS / config, *FAST, *extra, "--out", out)
    return out


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "sr_digits_etsdm.yaml", "sr")


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "cond_digits_etsdm.yaml", "cond")


@pytest.fixture(scope="module")
def pairs(sr_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "p"
    ok("sr-pairs", sr_run, "--out", out, "--num", 6)
    return out


# ---------------------------------------------------------------------------------------------
# Super-resolution end to end
# ---------------------------------------------------------------------------------------------
def test_sr_pairs_are_the_test_split_in_order(sr_run, pairs):
    from etsdm.data.transforms import area_downsample
    from etsdm.metrics.image import read_png_folder
    from etsdm.runs import load_model

    with np.load(pairs / "pairs.npz") as f:
        lo, hi, factor = torch.as_tensor(f["lowres"]), torch.as_tensor(f["highres"]), int(f["sr_factor"])
    assert lo.shape == (6, 1, 4, 4) and hi.shape == (6, 1, 8, 8) and factor == 2
    test = load_model(sr_run).dataset("test")
    assert torch.equal(hi, torch.stack([test[i]["x0"] for i in range(6)]))  # rows 0..5, in order
    assert torch.allclose(lo, area_downsample(hi, 2))  # each LR is its own HR, downsampled by 2
    assert sorted(p.name for p in (pairs / "lowres").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert (read_png_folder(pairs / "highres") - hi).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit copies
    assert (read_png_folder(pairs / "lowres") - lo).abs().max() <= 1 / 127.5 + 1e-6
    res = invoke("sr-pairs", sr_run, "--out", pairs)
    assert res.exit_code == 2 and "--force" in res.output


def test_sr_pairs_refuses_other_data(tmp_path):
    res = invoke("sr-pairs", CONFIGS / "digits_etsdm.yaml", "--out", tmp_path)
    assert res.exit_code == 2 and "data.name is 'digits'" in res.output and "sr" in res.output


def test_sr_three_commands(sr_run, pairs, tmp_path):
    """sr-pairs -> sample --lowres -> evaluate --targets: one output per input in input order,
    PSNR / SSIM as the library computes them."""
    from etsdm.metrics import psnr, ssim
    from etsdm.metrics.image import read_png_folder

    out = tmp_path / "sr.npz"
    ok("sample", sr_run, *SAMPLE, "--lowres", pairs, "--out", out)
    with np.load(out) as f:
        x, targets, lowres = (torch.as_tensor(f[k]) for k in ("samples", "targets", "lowres"))
    with np.load(pairs / "pairs.npz") as f:
        hi = torch.as_tensor(f["highres"])
    assert x.shape == (6, 1, 8, 8) and x.abs().max() <= 1 and torch.equal(targets, hi)
    assert lowres.shape == (6, 1, 4, 4)
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert (read_png_folder(tmp_path / "sr") - x).abs().max() <= 1 / 127.5 + 1e-6
    # the same outputs as sampling the first 6 test rows directly (full-size lowres, same noise): order kept
    ok("sample", sr_run, *SAMPLE, "--num", 6, "--out", tmp_path / "direct.npz")
    with np.load(tmp_path / "direct.npz") as f:
        assert torch.allclose(torch.as_tensor(f["samples"]), x, atol=1e-4)
        assert torch.equal(torch.as_tensor(f["targets"]), hi)
    ok("evaluate", out, "--metric", "psnr,ssim", "--targets", pairs, "--out", tmp_path / "e")
    res = json.loads((tmp_path / "e" / "evaluate.json").read_text())
    assert res["psnr"]["mean"] == pytest.approx(float(psnr(x, hi).mean()), rel=1e-9)
    assert res["ssim"]["mean"] == pytest.approx(float(ssim(x, hi).mean()), rel=1e-9)
    assert res["psnr"]["n"] == 6 and "pairs.npz" in res["targets"]


def test_evaluate_psnr_of_pairs_itself_and_of_upsampled_lowres(pairs, tmp_path):
    from etsdm.data.transforms import upsample
    from etsdm.metrics import psnr

    res = ok("evaluate", pairs / "highres", "--metric", "psnr", "--targets", pairs / "highres", "--out", tmp_path / "a")
    same = json.loads((tmp_path / "a" / "evaluate.json").read_text())["psnr"]
    assert same["mean"] == float("inf") and same["identical_images"] == 6 and "identical" in res.output
    with np.load(pairs / "pairs.npz") as f:
        lo, hi = torch.as_tensor(f["lowres"]), torch.as_tensor(f["highres"])
    with np.load(pairs / "bicubic.npz") as f:  # sr-pairs' baseline output: the inputs as the network sees them
        up = torch.as_tensor(f["samples"])
    assert torch.allclose(up, upsample(lo, (8, 8), "bicubic").clamp(-1, 1), atol=1e-6)
    ok("evaluate", pairs / "bicubic.npz", "--metric", "psnr", "--metric", "ssim", "--targets", pairs,
       "--out", tmp_path / "b")
    got = json.loads((tmp_path / "b" / "evaluate.json").read_text())
    assert got["psnr"]["mean"] == pytest.approx(float(psnr(up, hi).mean()), rel=1e-9)
    assert 5 < got["psnr"]["mean"] < 60 and set(got) >= {"psnr", "ssim"}


def test_evaluate_pairs_that_do_not_match_name_both_files(pairs, tmp_path):
    with np.load(pairs / "pairs.npz") as f:
        hi = f["highres"]
    np.savez(tmp_path / "five.npz", samples=hi[:5])
    res = invoke("evaluate", tmp_path / "five.npz", "--metric", "psnr", "--targets", pairs, "--out", tmp_path / "e")
    assert res.exit_code == 2 and "five.npz" in res.output and "pairs.npz" in res.output
    assert "5 images" in res.output and "6" in res.output and "Traceback" not in res.output
    np.savez(tmp_path / "small.npz", samples=hi[:, :, :4, :4])
    res = invoke("evaluate", tmp_path / "small.npz", "--targets", pairs, "--out", tmp_path / "e")
    assert res.exit_code == 2 and "(1, 4, 4)" in res.output and "(1, 8, 8)" in res.output
    res = invoke("evaluate", tmp_path / "five.npz", "--metric", "psnr,fid", "--targets", pairs)
    assert res.exit_code == 2 and "'fid'" in res.output and "psnr" in res.output
    res = invoke("evaluate", tmp_path / "five.npz", "--out", tmp_path / "e")
    assert res.exit_code == 2 and "--ref" in res.output and "--targets" in res.output


def test_sample_lowres_errors_name_the_option(sr_run, cond_run, tmp_path):
    np.savez(tmp_path / "bad.npz", lowres=np.zeros((2, 1, 3, 3), np.float32))
    res = invoke("sample", sr_run, *SAMPLE, "--lowres", tmp_path / "bad.npz", "--out", tmp_path / "o.npz")
    assert res.exit_code == 2 and "--lowres" in res.output and "(1, 4, 4) or (1, 8, 8)" in res.output
    np.savez(tmp_path / "none.npz", other=np.zeros((2, 1, 4, 4), np.float32))
    res = invoke("sample", sr_run, *SAMPLE, "--lowres", tmp_path / "none.npz", "--out", tmp_path / "o.npz")
    assert res.exit_code == 2 and "no array 'lowres'" in res.output
    res = invoke("sample", cond_run, *SAMPLE, "--lowres", tmp_path / "bad.npz", "--out", tmp_path / "o.npz")
    assert res.exit_code == 2 and "not a super-resolution run" in res.output


def test_sample_lowres_png_folder_in_name_order(sr_run, pairs, tmp_path):
    """--lowres a plain PNG folder: one output per file in sorted-name order; it has no targets, so
    --evaluate points to `etsdm evaluate --targets`."""
    ok("sample", sr_run, *SAMPLE, "--lowres", pairs / "lowres", "--out", tmp_path / "png.npz")
    with np.load(tmp_path / "png.npz") as f:
        assert f["samples"].shape == (6, 1, 8, 8) and "targets" not in f.files and f["lowres"].shape == (6, 1, 4, 4)
    res = invoke("sample", sr_run, *SAMPLE, "--lowres", pairs / "lowres", "--out", tmp_path / "e.npz", "--evaluate")
    assert res.exit_code == 2 and "--targets" in res.output and not (tmp_path / "e.npz").exists()  # before sampling


def test_sample_evaluate_on_sr_reports_psnr(sr_run, tmp_path):
    out = tmp_path / "s.npz"
    res = ok("sample", sr_run, *SAMPLE, "--num", 4, "--out", out, "--evaluate", "--eval-seeds", "0")
    record = json.loads(out.with_suffix(".eval.json").read_text())
    assert record["psnr"]["n"] == 4 and "PSNR" in res.output and "ssim" in record


def test_evaluate_a_sr_run_samples_it(sr_run, tmp_path):
    ok("evaluate", sr_run, "--num", 3, "--out", tmp_path / "e")
    res = json.loads((tmp_path / "e" / "evaluate.json").read_text())
    assert res["psnr"]["n"] == 3 and (tmp_path / "e" / "samples.npz").is_file()


def test_data_batch_pairs_each_x0_with_its_own_condition(sr_run, cond_run):
    from etsdm.analysis.specs import data_batch
    from etsdm.data.transforms import area_downsample, upsample
    from etsdm.runs import load_model

    x0, cond = data_batch(load_model(sr_run), "test", 5, seed=3)
    assert set(cond) == {"lowres"} and cond["lowres"].shape == x0.shape == (5, 1, 8, 8)
    assert torch.allclose(cond["lowres"], upsample(area_downsample(x0, 2), (8, 8), "bicubic").clamp(-1, 1))
    model = load_model(cond_run)
    x0, cond = data_batch(model, "test", 7, seed=1)
    test = model.dataset("test")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:7]
    assert torch.equal(cond["labels"], torch.stack([test[int(i)]["cond"]["labels"] for i in idx]))
    assert torch.equal(x0, torch.stack([test[int(i)]["x0"] for i in idx]))
    with pytest.raises(ValueError, match="conditional"):
        data_batch(model, "test", 2, 0, data="digits")


@pytest.mark.parametrize("command", ["lipschitz", "stability"])
def test_lipschitz_and_stability_on_sr_and_class_conditional_runs(sr_run, cond_run, tmp_path, command):
    args = ["--t-start", 200, "--t-max", 203, "--samples", 4, "--no-progress"] if command == "lipschitz" else [
        "--samples", 4]
    for run, inputs in ((sr_run, ["lowres"]), (cond_run, ["labels"])):
        out = tmp_path / run.parent.name
        ok(command, run, *args, "--seeds", 0, "--out", out)
        record = json.loads((out / f"{command}.json").read_text())
        row = record["curves"][0] if command == "lipschitz" else record["results"][0]
        assert row["network_inputs"] == inputs and row["space"] == "data"
        values = row["K"] if command == "lipschitz" else row["error"]
        assert all(np.isfinite(values)) and all(v > 0 for v in values)
        assert row["guidance"] == (1.0 if run == cond_run else None)


def test_condition_reaches_the_network_in_lipschitz(sr_run, monkeypatch):
    """K of an SR run is measured with each x_0's own low-resolution input: the network sees it."""
    from etsdm.analysis.lipschitz import lipschitz_curve
    from etsdm.analysis.specs import data_batch
    from etsdm.runs import load_model

    model = load_model(sr_run)
    seen = []
    forward = type(model.denoiser.net).forward
    monkeypatch.setattr(type(model.denoiser.net), "forward",
                        lambda self, x, c, **cond: seen.append(cond) or forward(self, x, c, **cond))
    x0, cond = data_batch(model, "test", 3, 0)
    curve = lipschitz_curve(model, x0, model.schedule, torch.tensor([1.0, 2.0]), cond=cond)
    assert seen and all("lowres" in c for c in seen) and torch.isfinite(curve.K).all()
    rows = seen[0]["lowres"]  # (t, sample) pairs at t then t': sample order 0,1,2 twice per time
    assert torch.equal(rows[:3], cond["lowres"]) and torch.equal(rows[6:9], cond["lowres"])


def test_stability_guidance(cond_run, sr_run, tmp_path):
    base = ["--samples", 4, "--seeds", 0, "--scales", "0.1"]
    ok("stability", cond_run, *base, "--out", tmp_path / "g1")
    ok("stability", cond_run, *base, "--guidance", 3, "--out", tmp_path / "g3")
    e1, e3 = (json.loads((tmp_path / g / "stability.json").read_text())["results"][0] for g in ("g1", "g3"))
    assert e3["guidance"] == 3.0 and e1["error"] != e3["error"]
    res = invoke("stability", sr_run, *base, "--guidance", 2, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--guidance" in res.output and "not class-conditional" in res.output


# ---------------------------------------------------------------------------------------------
# Class-conditional sampling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, expected", [(None, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]), ("3", [3] * 12),
                                              ("0,1,2", [0, 1, 2] * 4)])
def test_sample_class_conditional_labels(cond_run, tmp_path, labels, expected):
    out = tmp_path / "c.npz"
    ok("sample", cond_run, *SAMPLE, "--num", 12, "--out", out, *(["--labels", labels] if labels else []))
    with np.load(out) as f:
        assert f["samples"].shape == (12, 1, 8, 8) and f["labels"].tolist() == expected
        assert json.loads(str(f["sampling"]))["guidance"] == 1.0  # the run's sample.guidance


def test_sample_guidance_changes_the_samples_and_bad_labels_are_refused(cond_run, tmp_path):
    draws = {}
    for scale in ("0", "1", "4"):
        ok("sample", cond_run, *SAMPLE, "--num", 4, "--guidance", scale, "--out", tmp_path / f"{scale}.npz")
        with np.load(tmp_path / f"{scale}.npz") as f:
            draws[scale] = f["samples"]
            assert json.loads(str(f["sampling"]))["guidance"] == float(scale)
    assert not np.allclose(draws["0"], draws["1"]) and not np.allclose(draws["1"], draws["4"])
    for bad in ("10", "-1", "a,b"):
        res = invoke("sample", cond_run, *SAMPLE, "--labels", bad, "--out", tmp_path / "x.npz")
        assert res.exit_code == 2 and "--labels" in res.output and "0..9" in res.output


def test_labels_and_guidance_refused_on_unconditional_runs(sr_run, tmp_path):
    res = invoke("sample", sr_run, *SAMPLE, "--labels", "1", "--out", tmp_path / "x.npz")
    assert res.exit_code == 2 and "not class-conditional" in res.output and "--labels" in res.output
    res = invoke("sample", sr_run, *SAMPLE, "--guidance", "2", "--out", tmp_path / "x.npz")
    assert res.exit_code == 2 and "not class-conditional" in res.output and "--guidance" in res.output


# ---------------------------------------------------------------------------------------------
# Autoencoder configs and latent runs
# ---------------------------------------------------------------------------------------------
AE_FAST = ["--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "autoencoder.block_out_channels=[8, 16]",
           "--set", "autoencoder.norm_num_groups=4", "--no-progress"]


def test_train_autoencoder_config_options(tmp_path):
    res = ok("train", CONFIGS / "ae_digits.yaml", *AE_FAST, "--print-config")
    printed = yaml.safe_load(res.output)
    assert printed["autoencoder"]["block_out_channels"] == [8, 16] and printed["train"]["steps"] == 2
    res = invoke("train", CONFIGS / "ae_digits.yaml", "--set", "autoencoder.latent_channelz=3", "--print-config")
    assert res.exit_code == 2 and "latent_channelz" in res.output
    res = invoke("train", CONFIGS / "ae_digits.yaml", "--resume", "--out", tmp_path / "ae")
    assert res.exit_code == 2 and "autoencoder config" in res.output


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ae") / "ae"
    ok("train", CONFIGS / "ae_digits.yaml", *AE_FAST, "--out", out)
    return out


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, ae_run) -> Path:
    return _train(tmp_path_factory, "ldm_digits_etsdm.yaml", "ldm", "--set", f"latent.autoencoder={ae_run}",
                  "--set", "latent.cache=" + str(tmp_path_factory.mktemp("cache")))


def test_train_autoencoder_writes_a_diffusers_folder(ae_run):
    from etsdm.latent import is_autoencoder_folder

    assert is_autoencoder_folder(ae_run)


def test_latent_run_samples_decoded_images(latent_run, tmp_path):
    out = tmp_path / "l.npz"
    ok("sample", latent_run, *SAMPLE, "--num", 5, "--out", out)
    with np.load(out) as f:
        x = f["samples"]
        assert x.shape == (5, 1, 8, 8) and np.abs(x).max() <= 1 and "decoded" in json.loads(str(f["sampling"]))


def test_lipschitz_of_a_latent_run_is_in_latent_space(latent_run, tmp_path):
    from etsdm.analysis.specs import data_batch
    from etsdm.runs import load_model

    model = load_model(latent_run)
    x0, cond = data_batch(model, "test", 4, seed=0)
    assert tuple(x0.shape[1:]) == tuple(model.shape) == (2, 4, 4) and cond == {}
    rows = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:4]
    images = torch.stack([model.image_dataset("test")[int(i)] for i in rows])
    assert torch.allclose(x0, model.latents.encode(images), atol=1e-5)  # the encoded test split (cached)
    given, _ = data_batch(model, "test", 4, seed=0, data="digits")  # images given: encoded here
    assert torch.allclose(given, x0, atol=1e-5)
    ok("lipschitz", latent_run, "--t-start", 200, "--t-max", 203, "--samples", 4, "--seeds", 0, "--no-progress",
       "--out", tmp_path / "k")
    curve = json.loads((tmp_path / "k" / "lipschitz.json").read_text())["curves"][0]
    assert curve["space"] == "latent" and all(k > 0 for k in curve["K"])
    ok("stability", latent_run, "--samples", 4, "--seeds", 0, "--out", tmp_path / "s")
    assert json.loads((tmp_path / "s" / "stability.json").read_text())["results"][0]["space"] == "latent"


def test_lipschitz_inside_one_shared_interval_is_zero_and_plots(sr_run, tmp_path):
    """E-TSDM shares the condition on [0, 20): K there is exactly 0; the figure falls back to a linear axis."""
    res = ok("lipschitz", sr_run, "--t-max", 3, "--samples", 2, "--seeds", 0, "--no-progress", "--out", tmp_path)
    assert json.loads((tmp_path / "lipschitz.json").read_text())["curves"][0]["K"] == [0.0] * 4
    assert "y axis is linear" in res.output and (tmp_path / "lipschitz.png").is_file()


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "digits.safetensors"
    ok("features", "--epochs", 1, "--out", out)
    return out


@pytest.mark.parametrize("run_name", ["cond_run", "latent_run"])
def test_evaluate_a_run_samples_decodes_and_reports_fid(request, run_name, features, tmp_path):
    """`etsdm evaluate RUN`: a class-conditional run sampled over its classes, a latent run decoded;
    FID in the digits features of the (decoded) images."""
    run = request.getfixturevalue(run_name)
    res = ok("evaluate", run, "--num", 12, "--n", 10, "--seeds", 0, "--features", features, "--out", tmp_path)
    fid = json.loads((tmp_path / "evaluate.json").read_text())["fid-digits"]
    assert fid["n"] == 10 and np.isfinite(fid["fid"]) and "FID-10" in res.output
    with np.load(tmp_path / "samples.npz") as f:
        assert f["samples"].shape == (12, 1, 8, 8) and np.abs(f["samples"]).max() <= 1
        assert ("labels" in f.files) == (run_name == "cond_run")


def test_sample_with_no_other_argument(cond_run, tmp_path):
    """`etsdm sample RUN` alone on a class-conditional run: 100 samples, DDIM-50, every class in turn,
    into RUN/samples/ (of a copy, so the module's run stays clean). A latent run takes the same path
    (test_latent_run_samples_decoded_images)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cond_run, run)
    ok("sample", run)
    with np.load(run / "samples" / "ddim-50-seed0.npz") as f:
        assert f["samples"].shape == (100, 1, 8, 8) and f["labels"].tolist() == [i % 10 for i in range(100)]
    assert (run / "samples" / "ddim-50-seed0.png").is_file()


def test_train_resolves_a_relative_autoencoder_beside_the_config(tmp_path):
    """latent.autoencoder: ae.yaml is relative to the config file, not to the working directory."""
    ae = yaml.safe_load((CONFIGS / "ae_digits.yaml").read_text())
    ae["autoencoder"] |= {"block_out_channels": [8, 16], "norm_num_groups": 4}
    ae["train"] |= {"steps": 2, "batch_size": 8}
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "ae_tiny.yaml").write_text(yaml.safe_dump(ae))
    ldm = yaml.safe_load((CONFIGS / "ldm_digits_etsdm.yaml").read_text())
    ldm["latent"] |= {"autoencoder": "ae_tiny.yaml", "cache": str(tmp_path / "cache")}
    (folder / "ldm.yaml").write_text(yaml.safe_dump(ldm))
    ok("train", folder / "ldm.yaml", *FAST, "--out", tmp_path / "run")
    assert (tmp_path / "run" / "autoencoder").is_dir()
