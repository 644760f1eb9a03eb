"""Metrics behave: FD against a second implementation, FD(X, X) ≈ 0, monotone in noise and dropped
classes; GMM metrics flag over-contracted and over-dispersed samples; PSNR closed form."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from etsdm import GaussianMixture
from etsdm.metrics import (
    digits_split,
    fid_with_floor,
    frechet_distance,
    gmm_metrics,
    identity_features,
    inception_available,
    inception_fid,
    load_feature_net,
    mmd2,
    psnr,
    save_feature_net,
    sliced_wasserstein,
    ssim,
    train_feature_net,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is fastest


@pytest.fixture(scope="module")
def feature_net():
    return train_feature_net()  # the defaults of `etsdm features`


def test_frechet_distance_matches_scipy_sqrtm_reference():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 5, generator=gen, dtype=torch.float64)
    b = (
        torch.randn(300, 5, generator=gen, dtype=torch.float64) @ torch.diag(torch.tensor([1.0, 2, 0.5, 1, 3]).double())
        + 0.3
    )
    fd = frechet_distance(b, a, identity_features(5))
    mu1, mu2 = a.mean(0).numpy(), b.mean(0).numpy()
    s1, s2 = np.cov(a.numpy().T), np.cov(b.numpy().T)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert fd == pytest.approx(float(ref), rel=1e-6)


def test_feature_net_accuracy_determinism_and_roundtrip(feature_net, tmp_path):
    net, report = feature_net
    assert report.test_accuracy > 0.95 and report.n_test == 300
    short = [train_feature_net(epochs=1, seed=0)[0] for _ in range(2)]  # deterministic: equal weights
    for (k, v), v2 in zip(short[0].state_dict().items(), short[1].state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    save_feature_net(net, tmp_path / "f.safetensors", report)
    loaded, meta = load_feature_net(tmp_path / "f.safetensors")
    x = digits_split("test")[0][:20]
    assert torch.equal(loaded(x), net(x)) and meta["test_accuracy"] == report.test_accuracy
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_feature_net(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="etsdm features"):
        load_feature_net(tmp_path / "missing.safetensors")


def test_fd_self_zero_and_monotone_in_noise_and_dropped_classes(feature_net):
    net, _ = feature_net
    x_tr, _ = digits_split("train")
    x_te, y_te = digits_split("test")
    assert abs(frechet_distance(x_tr, x_tr, net)) < 1e-6
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x_te.shape, generator=gen)
    by_noise = [frechet_distance((x_te + s * noise).clamp(-1, 1), x_tr, net) for s in (0.0, 0.2, 0.5, 1.0)]
    assert all(b > a for a, b in zip(by_noise, by_noise[1:], strict=False)), by_noise
    by_drop = []
    for dropped in (0, 3, 6, 9):
        keep = y_te >= dropped  # drop classes 0..dropped-1
        by_drop.append(frechet_distance(x_te[keep], x_tr, net))
    assert all(b > a for a, b in zip(by_drop, by_drop[1:], strict=False)), by_drop


def test_fid_with_floor_reports_n_and_floor(feature_net):
    net, _ = feature_net
    x_tr, _ = digits_split("train")
    x_te, _ = digits_split("test")
    noisy = (x_te + 0.5 * torch.randn(x_te.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    res = fid_with_floor(noisy, x_tr, x_te, net, n=200, seeds=(0, 1))
    assert res["n"] == 200 and len(res["fid_values"]) == 2 and res["floor_std"] > 0
    assert res["fid"] > 3 * res["floor"] > 0
    with pytest.raises(ValueError, match="n must be in"):
        fid_with_floor(noisy, x_tr, x_te, net, n=1000)


def test_gmm_metrics_flag_too_narrow_and_too_wide():
    gmm = GaussianMixture.ring(8, 2.0, 0.1)
    gen = torch.Generator().manual_seed(3)
    x, comp = gmm.sample_components(800, gen)
    z = torch.randn(800, 2, generator=gen, dtype=torch.float64)
    narrow, wide = gmm.means[comp] + 0.03 * z, gmm.means[comp] + 0.3 * z
    good, bad_n, bad_w = (gmm_metrics(s, gmm, seeds=(0, 1)) for s in (x, narrow, wide))
    assert abs(good["spread_ratio"]["value"] - 1) < 0.1 and good["near_mode"]["value"] > 0.97
    assert bad_n["spread_ratio"]["value"] < 0.5 < 2 < bad_w["spread_ratio"]["value"]
    assert bad_n["near_mode"]["value"] >= good["near_mode"]["value"]  # the share alone rewards contraction
    assert bad_n["log_likelihood"]["value"] > bad_n["log_likelihood"]["true"]  # so does the likelihood
    for bad in (bad_n, bad_w):
        assert bad["spread_log_error"]["value"] > 5 * good["spread_log_error"]["true"]
        assert bad["mmd2"]["value"] > 5 * abs(good["mmd2"]["true"]) + 3 * bad["mmd2"]["true_std"]
    assert bad_w["sliced_w1"]["value"] > 1.5 * bad_w["sliced_w1"]["true"]
    assert good["sliced_w1"]["n"] == 800 and "value_std" in good["mmd2"]


def test_gmm_metrics_catch_dropped_modes():
    gmm = GaussianMixture.ring(8, 2.0, 0.1)
    x, comp = gmm.sample_components(800, torch.Generator().manual_seed(4))
    half = x[comp < 4]
    res = gmm_metrics(half, gmm, seeds=(0,))
    assert res["modes_covered"]["value"] == 4 and res["modes_covered"]["true"] == 8
    assert res["mode_tv"]["value"] == pytest.approx(0.5, abs=1e-12)
    assert res["sliced_w1"]["value"] > 3 * res["sliced_w1"]["true"]


def test_sliced_w1_and_mmd_against_second_implementations():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(300, 1, generator=gen), torch.randn(300, 1, generator=gen) * 1.5 + 0.2
    # in 1-D every projection is ±identity: sliced W1 = W1
    sw = sliced_wasserstein(a, b, projections=4, generator=gen)
    assert sw == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy()), rel=1e-6)
    a2, b2 = torch.randn(6, 2, generator=gen).double(), torch.randn(5, 2, generator=gen).double()
    k = lambda x, y: sum(np.exp(-np.sum((x - y) ** 2) / (2 * h * h)) for h in (0.5, 2.0))  # noqa: E731
    A, B = a2.numpy(), b2.numpy()
    kaa = np.mean([k(A[i], A[j]) for i in range(6) for j in range(6) if i != j])
    kbb = np.mean([k(B[i], B[j]) for i in range(5) for j in range(5) if i != j])
    kab = np.mean([k(A[i], B[j]) for i in range(6) for j in range(5)])
    assert mmd2(a2, b2, (0.5, 2.0)) == pytest.approx(kaa + kbb - 2 * kab, rel=1e-9)


def test_psnr_closed_form_and_ssim():
    gen = torch.Generator().manual_seed(6)
    target = torch.rand(3, 1, 16, 16, generator=gen) * 1.6 - 0.8
    pred = target + 0.05 * torch.randn(target.shape, generator=gen)
    mse = (((pred + 1) / 2).clamp(0, 1) - (target + 1) / 2).double().pow(2).mean((1, 2, 3))
    torch.testing.assert_close(psnr(pred, target), 10 * torch.log10(1 / mse))
    assert torch.allclose(ssim(target, target), torch.ones(3, dtype=torch.float64))
    worse = target + 0.2 * torch.randn(target.shape, generator=gen)
    assert bool((ssim(worse, target) < ssim(pred, target)).all())
    with pytest.raises(ValueError, match="equal shape"):
        psnr(pred, target[:2])


def test_inception_input_conversion():
    from etsdm.metrics.fid import _to_uint8_rgb

    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    out = _to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 0].flatten().tolist() == [0, 128, 255, 255] and torch.equal(out[0, 0], out[0, 2])


def test_inception_fid_needs_local_weights_and_optional_extra(tmp_path):
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        inception_fid(x, x, tmp_path / "missing.pth")
    ok, why = inception_available()
    if not ok:
        pytest.skip(f"Inception-v3 FID not testable here: {why}")
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    pytest.skip("no local Inception-v3 weights file in the test environment") if not weights.exists() else None


def test_check_samples_rejects_what_no_metric_can_use_and_clamps_overshoot():
    from etsdm.metrics import SampleError, check_samples, evaluate_samples

    x = torch.rand(4, 1, 8, 8) * 2 - 1
    for bad, message in [
        (x.clone().index_put_((torch.tensor([1]),), torch.tensor(float("nan"))), "NaN"),
        (x.clone().index_put_((torch.tensor([2]),), torch.tensor(float("inf"))), "infinite"),
        (((x + 1) * 127.5).to(torch.uint8), "integer dtype uint8"),
        ((x + 1) * 127.5, r"expected images in \[-1, 1\].*127.5"),
    ]:
        with pytest.raises(SampleError, match=message):
            check_samples(bad)
    same, notes = check_samples(x)
    assert torch.equal(same, x) and notes == []
    clamped, notes = check_samples(1.5 * x)
    assert torch.equal(clamped, (1.5 * x).clamp(-1, 1)) and "overshoot" in notes[0]
    vectors, notes = check_samples(torch.full((5, 2), 10.0))  # mixture samples are unbounded: no range check
    assert notes == [] and float(vectors.max()) == 10.0
    with pytest.raises(SampleError, match="NaN"):  # the library path of `etsdm sample --evaluate`
        evaluate_samples(torch.full((4, 2), float("nan")), "gmm", seeds=(0,))


def test_check_samples_flags_images_that_look_like_0_1_data():
    """[0, 1] images fit inside [-1, 1], so they are not an error; with no negative value at all they get a
    note saying how to rescale (review item 16: the docstring claimed they were caught)."""
    from etsdm.metrics import check_samples

    unit = torch.rand(6, 1, 8, 8)
    same, notes = check_samples(unit)
    assert torch.equal(same, unit) and len(notes) == 1 and "[0, 1]" in notes[0] and "2 * x - 1" in notes[0]
    assert check_samples(unit * 2 - 1)[1] == []  # ordinary [-1, 1] samples: no note


def test_image_feature_net_learns_rotations_deterministically():
    from etsdm.metrics import train_image_feature_net

    gen = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(64, 1, 8, 8, generator=gen) - 1
    x[:, :, :2, :] = 1.0  # a bright top edge: its rotation is visible
    x[:, :, :, :1] = 0.5  # and a dimmer left edge: 90 and 270 degrees differ too
    net, report = train_image_feature_net(x, epochs=40)
    assert report.rotation_accuracy > 0.9 and (report.n_train, report.n_val) == (51, 13)
    net2, _ = train_image_feature_net(x, epochs=40)
    torch.testing.assert_close(net(x), net2(x), rtol=0, atol=0)
    assert net(x).shape == (64, 64) and net(x).dtype == torch.float64
