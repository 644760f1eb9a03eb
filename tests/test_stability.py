"""Perturbation error of x̂0 (Fig. 2) against closed forms for linear models."""

from __future__ import annotations

import math

import pytest
import torch

from etsdm import Denoiser, GaussianMixture, TimestepSharing, make_schedule
from etsdm.analysis import perturbation_error, relative_difference
from etsdm.analysis.specs import analytic_model

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is fastest


SCHED = make_schedule("linear", T=1000)


def _x0(n=64, d=5):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _z(seed: int, n: int = 64, d: int = 5) -> torch.Tensor:
    """The unit perturbation z that perturbation_error draws with this seed (after the forward ε)."""
    gen = torch.Generator().manual_seed(seed)
    torch.randn(n, d, generator=gen, dtype=torch.float64)  # the forward-process ε
    return torch.randn(n, d, generator=gen, dtype=torch.float64)


def test_default_metric_is_mse_and_grows_like_s_squared_for_a_linear_model():
    """net(x, c) = c0 · x as an x0-predictor: x̂0(x + s z) − x̂0(x) = c0 s z, so the default error
    (per-pixel MSE, the paper's Fig. 2 scale) is c0² s² E[mean z²]: quadruples when s doubles
    (issue 7 item 5; the RMS it replaced only doubles)."""
    c0 = 0.7
    den = Denoiser(lambda x, c: c0 * x, SCHED, "x0")
    scales = [0.05, 0.1, 0.2, 0.3]
    res = perturbation_error(den, _x0(), SCHED, scales=scales, generator=torch.Generator().manual_seed(1))
    assert res.metric == "mse" and res.to_dict()["metric"] == "mse"
    expected = c0**2 * torch.tensor(scales, dtype=torch.float64) ** 2 * _z(1).pow(2).mean(1).mean()
    torch.testing.assert_close(res.error, expected, rtol=1e-10, atol=0)
    assert float(res.error[1] / res.error[0]) == pytest.approx(4.0, rel=1e-10)
    with pytest.raises(ValueError, match="metric must be one of"):
        perturbation_error(den, _x0(), SCHED, metric="mae")


def test_rms_option_linear_in_s():
    """The same linear model with metric="rms": the error is c0 · s · E[RMS(z)], exactly linear in
    s (same z for every scale)."""
    c0 = 0.7
    den = Denoiser(lambda x, c: c0 * x, SCHED, "x0")
    scales = [0.05, 0.1, 0.2]
    res = perturbation_error(den, _x0(), SCHED, scales=scales, generator=torch.Generator().manual_seed(1), metric="rms")
    assert res.metric == "rms"
    per_scale = res.error / torch.tensor(scales, dtype=torch.float64)
    torch.testing.assert_close(per_scale, per_scale[:1].expand(3), rtol=1e-10, atol=0)
    # E[RMS(z)] = E‖z‖ / √D with E‖z‖ = √2 Γ((D+1)/2) / Γ(D/2): a sampling check with n = 64
    d = 5
    e_rms = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2)) / math.sqrt(d)
    assert float(per_scale[0]) == pytest.approx(c0 * e_rms, rel=0.1)
    assert res.t == 100.0 and res.n_samples == 64


def test_eps_callable_converted_with_its_schedule():
    """ε(x, t) = k x gives x̂0 = (1 − σ k) x / α: error = s |1 − σ k| / α · RMS(z) per example."""
    k, t = 0.3, 100.0
    res = perturbation_error(
        lambda x, tt: k * x, _x0(), SCHED, scales=[0.1], generator=torch.Generator().manual_seed(2), metric="rms"
    )
    alpha, sigma = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    expected = 0.1 * abs(1 - sigma * k) / alpha * _z(2).pow(2).mean(1).sqrt().mean()
    assert float(res.error[0]) == pytest.approx(float(expected), rel=1e-10)


def test_exact_models_error_grows_with_scale_and_sharing_changes_it():
    base, shared = analytic_model("gmm"), analytic_model("gmm:etsdm")
    x0 = base.dataset("test", 128)
    out = [
        perturbation_error(m, x0, SCHED, t=50, scales=[0.02, 0.1, 0.3], generator=torch.Generator().manual_seed(3))
        for m in (base, shared)
    ]
    for res in out:
        assert bool((res.error[1:] > res.error[:-1]).all())
    assert not torch.allclose(out[0].error, out[1].error)  # t = 50 is shared: different functions
    # at t̃ = 100 (not shared) the two denoisers are the same function: equal errors
    at_tilde = [
        perturbation_error(m, x0, SCHED, t=100, scales=[0.1], generator=torch.Generator().manual_seed(4)).error
        for m in (base, shared)
    ]
    torch.testing.assert_close(at_tilde[0], at_tilde[1])
    assert TimestepSharing(100, 5)(torch.tensor(100.0)) == 100


def test_relative_difference_and_bad_input():
    torch.testing.assert_close(
        relative_difference([0.09, 0.2], [0.063, 0.2]), torch.tensor([0.09 / 0.063 - 1, 0.0], dtype=torch.float64)
    )
    gmm = GaussianMixture.ring()
    with pytest.raises(ValueError, match="scales"):
        perturbation_error(gmm.eps_model(SCHED), _x0(4, 2), SCHED, scales=[0.1, -1])
    with pytest.raises(ValueError, match="t must be in"):
        perturbation_error(gmm.eps_model(SCHED), _x0(4, 2), SCHED, t=1000)
