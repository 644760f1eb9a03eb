"""Denoiser conversions, the condition the network receives, and the training losses.

References: an oracle network that returns the exact ε / x0 / v of a known (x0, ε) pair; hand
computations with DDPM's ᾱ table built here from Eq. (A3); Algorithm A1 written out; scipy's KS test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import etsdm
from etsdm import Denoiser, Identity, Remap, TimestepSharing, diffusion_loss, make_schedule, sample_timesteps

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64


def sharing_reference(t: float, t_tilde: float, n: int) -> float:
    """f_T of Algorithm A1 (lines 1, 5-9): the largest partition point t_{i-1} <= t, for t < t̃."""
    if t >= t_tilde:
        return t
    return max(p for p in (i * (t_tilde / n) for i in range(n)) if p <= t)


def ddpm_abar(T: int = 1000) -> torch.Tensor:
    """ᾱ of Ho et al.'s linear schedule (Eq. A3), built by hand in float64."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=F64), 0)


class Oracle:
    """A 'network' that returns the exact output of a given type for a known (x0, ε, t)."""

    def __init__(self, x0, eps, alpha, sigma, prediction):
        a, s = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        self.out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]
        self.calls = 0

    def __call__(self, x, c):
        self.calls += 1
        return self.out.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Conversions ε / x0 / v / score
# ----------------------------------------------------------------------------------------------
CASES = [
    ("linear", False, [0.0, 10.0, 500.0, 999.0]),
    ("zero-snr", False, [0.0, 500.0, 998.0, 999.0]),  # α(999) = 2^-12: the zero-SNR last step
    ("cosine", True, [1e-4, 0.3, 0.7, 0.99]),
]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name, continuous, times", CASES)
def test_conversions_recover_x0_and_eps(prediction, name, continuous, times):
    s = make_schedule(name, continuous=continuous)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    t = torch.tensor(times, dtype=F64)
    alpha, sigma = s.alpha(t), s.sigma(t)
    x = alpha[:, None] * x0 + sigma[:, None] * eps  # Eq. (1)
    net = Oracle(x0, eps, alpha, sigma, prediction)
    d = Denoiser(net, s, prediction=prediction)
    est = d.estimate(x, t)
    # x0 from ε divides by α: its rounding error grows like 1/α (α = 2^-12 on the zero-SNR step)
    tol = 1e-9 if prediction == "eps" else 1e-12
    torch.testing.assert_close(est.eps, eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(est.x0, x0, rtol=0, atol=tol)
    torch.testing.assert_close(d.v(x, t), alpha[:, None] * eps - sigma[:, None] * x0, rtol=0, atol=1e-12)
    # score of q(x_t | x0) = N(α x0, σ² I) is -(x - α x0)/σ², which equals -ε/σ
    torch.testing.assert_close(d.score(x, t), -(x - alpha[:, None] * x0) / sigma[:, None] ** 2, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.target(x0, eps, t), net.out, rtol=0, atol=1e-12)
    assert torch.equal(d(x, t), est.eps)
    # a Python-number time gives the same conversions as a tensor (samplers' fast path)
    i = 2
    one = Denoiser(Oracle(x0[i : i + 1], eps[i : i + 1], alpha[i : i + 1], sigma[i : i + 1], prediction), s, prediction)
    est1 = one.estimate(x[i : i + 1], float(t[i]))
    torch.testing.assert_close(est1.x0, x0[i : i + 1], rtol=0, atol=tol)


def test_v_prediction_is_accurate_at_tiny_alpha_in_float32():
    """On the zero-SNR last step (α = 2^-12) v-prediction recovers x0 in float32; ε-prediction would
    divide rounding errors by α (x0 = (x - σε)/α) and is only accurate in float64."""
    s = make_schedule("zero-snr")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    t = torch.full((64,), 999.0, dtype=F64)
    alpha, sigma = s.alpha(t), s.sigma(t)
    assert float(alpha[0]) == pytest.approx(2.0**-12)
    x = (alpha[:, None] * x0.double() + sigma[:, None] * eps.double()).float()
    d_v = Denoiser(Oracle(x0, eps, alpha, sigma, "v"), s, prediction="v")
    err_v = (d_v.x0(x, t) - x0).abs().max().item()
    d_e = Denoiser(Oracle(x0, eps, alpha, sigma, "eps"), s, prediction="eps")
    err_e = (d_e.x0(x, t) - x0).abs().max().item()
    assert err_v < 1e-5
    assert err_e > 10 * err_v  # the reason v-prediction exists; documents the float32 limit


def test_bad_prediction_raises():
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(lambda x, c: x, make_schedule("linear"), prediction="score")


# ----------------------------------------------------------------------------------------------
# The same condition in training and in every sampler
# ----------------------------------------------------------------------------------------------
class SpyNet:
    """Records every condition it receives; returns a harmless ε."""

    def __init__(self):
        self.conditions: list[torch.Tensor] = []

    def __call__(self, x, c):
        assert c.dtype == torch.float32 and c.shape == (x.shape[0],)
        self.conditions.append(c.clone())
        return 0.1 * x


class RecordingDenoiser(Denoiser):
    """Records the physical time of every evaluation a sampler asks for (and nothing else)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.times: list[float] = []

    def estimate(self, x, t):
        self.times.append(float(t) if not torch.is_tensor(t) else float(t.reshape(-1)[0]))
        return super().estimate(x, t)


SETUPS = [
    (False, TimestepSharing(100, 5, T=1000), "time-quadratic"),
    (True, TimestepSharing(0.1, 5, T=None), "logSNR"),
]


@pytest.mark.parametrize("continuous, sharing, spacing", SETUPS)
@pytest.mark.parametrize("sampler", etsdm.SAMPLERS)
def test_same_condition_in_training_and_sampling(sampler, continuous, sharing, spacing):
    s = make_schedule("linear", continuous=continuous)
    spy = SpyNet()
    d = RecordingDenoiser(spy, s, prediction="eps", condition=sharing)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    nfe = 12
    etsdm.sample(d, noise, s, sampler=sampler, nfe=nfe, spacing=spacing)
    assert len(spy.conditions) == nfe == len(d.times)  # NFE = network evaluations, exactly
    c_sample = torch.stack([c[0] for c in spy.conditions])
    assert all(bool((c == c[0]).all()) for c in spy.conditions)
    t = torch.tensor(d.times, dtype=F64)
    assert bool((t < sharing.t_tilde).sum() >= 2)  # the grid really visits the shared interval
    # Algorithm A1's f_T, computed here, then handed to a float32 network input
    expected = torch.tensor([sharing_reference(v, sharing.t_tilde, sharing.n) for v in d.times], dtype=torch.float32)
    assert torch.equal(c_sample, expected)
    # the training loss at the same times gives the network exactly the same conditions
    spy.conditions.clear()
    diffusion_loss(d, torch.zeros(len(t), 2), t=t)
    assert len(spy.conditions) == 1
    assert torch.equal(spy.conditions[0], c_sample)


# ----------------------------------------------------------------------------------------------
# diffusion_loss
# ----------------------------------------------------------------------------------------------
def test_uniform_time_sampling_ranges():
    g = torch.Generator().manual_seed(0)
    disc = Denoiser(SpyNet(), make_schedule("linear"))
    t = sample_timesteps(disc, 20000, generator=g)
    assert bool((t == t.round()).all()) and t.min() == 0 and t.max() == 999
    counts = np.bincount(t.long().numpy() // 100, minlength=10)  # 10 bins of 100 timesteps
    assert stats.chisquare(counts).pvalue > 1e-4
    cont = Denoiser(SpyNet(), make_schedule("linear", continuous=True))
    t_eps = 1e-5
    t = sample_timesteps(cont, 5000, generator=g, t_eps=t_eps)
    assert bool(((t >= t_eps) & (t <= 1.0)).all())
    assert stats.kstest(t.numpy(), stats.uniform(loc=t_eps, scale=1 - t_eps).cdf).pvalue > 1e-4
    out = diffusion_loss(cont, torch.zeros(8, 2), generator=g)
    assert out.t.shape == (8,) and bool((out.t >= t_eps).all())


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_perfect_oracle_has_zero_loss(prediction):
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 3, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (16,), generator=g).to(F64)
    d = Denoiser(Oracle(x0, noise, s.alpha(t), s.sigma(t), prediction), s, prediction=prediction)
    out = diffusion_loss(d, x0, t=t, noise=noise)
    assert out.total.shape == (16,)
    assert float(out.total.max()) < 1e-24
    # and a wrong network does not: the loss is a real loss
    wrong = Denoiser(lambda x, c: torch.zeros_like(x), s, prediction=prediction)
    assert float(diffusion_loss(wrong, x0, t=t, noise=noise).total.min()) > 1e-4


def hand_net(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    c = c.to(x.dtype)[:, None]  # nonlinear in c, so that K(t, t+Δt) != K(t, t-Δt)
    return torch.tanh(x) * (1 + c / 1000) + torch.sin(c / 37)


def test_loss_equals_hand_computation_with_ddpm_r():
    """v-prediction, E-TSDM (t̃ = 100, n = 5), DDPM-r weight 0.5, computed here without etsdm."""
    s = make_schedule("linear")
    calls = []
    d = Denoiser(lambda x, c: (calls.append(1), hand_net(x, c))[1], s, prediction="v", condition=TimestepSharing())
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    t_list = [0, 19, 20, 99, 500, 999]
    out = diffusion_loss(d, x0, t=torch.tensor(t_list, dtype=F64), noise=noise, reg_weight=0.5)
    assert len(calls) == 2  # DDPM-r costs exactly one extra forward pass (for the whole batch)

    abar = ddpm_abar()
    for i, t in enumerate(t_list):
        a, sg = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        x_t = a * x0[i] + sg * noise[i]  # Eq. (1)
        c = float(t // 20 * 20 if t < 100 else t)  # f_T of the default E-TSDM
        t2 = t + 1 if t + 1 <= 999 else t - 1  # Δt = 1; backwards at the last step
        c2 = float(t2 // 20 * 20 if t2 < 100 else t2)
        o1 = hand_net(x_t[None], torch.tensor([c]))[0]
        o2 = hand_net(x_t[None], torch.tensor([c2]))[0]
        mse = ((o1 - (a * noise[i] - sg * x0[i])) ** 2).mean()  # target v = α ε - σ x0
        k = (o1 - o2).norm() / 1.0  # K(t, t') of Eq. (8)
        assert float(out.mse[i]) == pytest.approx(float(mse), rel=1e-10)
        assert float(out.reg[i]) == pytest.approx(float(k), rel=1e-10, abs=1e-12)
        assert float(out.total[i]) == pytest.approx(float(mse + 0.5 * k), rel=1e-10)
    # inside a shared sub-interval t and t+1 get the same condition: K = 0 there (t = 0), not at 19
    assert float(out.reg[0]) == 0.0 and float(out.reg[1]) > 0.0


def test_ddpm_r_continuous_finite_difference():
    s = make_schedule("linear", continuous=True)
    calls = []
    d = Denoiser(lambda x, c: (calls.append(1), hand_net(x, c))[1], s, prediction="eps")
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, 2, generator=g, dtype=F64)
    t = torch.tensor([0.01, 0.3, 0.7, 0.9995], dtype=F64)
    out = diffusion_loss(d, x0, t=t, noise=noise, reg_weight=1.0, reg_dt=1e-3)
    assert len(calls) == 2
    x_t = s.alpha(t)[:, None] * x0 + s.sigma(t)[:, None] * noise
    t2 = torch.where(t + 1e-3 <= 1.0, t + 1e-3, t - 1e-3)
    c, c2 = t.float(), t2.float()  # Identity map, float32 network input
    k = (hand_net(x_t, c) - hand_net(x_t, c2)).norm(dim=1) / 1e-3
    torch.testing.assert_close(out.reg, k, rtol=1e-9, atol=1e-9)
    assert float(t2[-1]) < float(t[-1])  # the top end steps backwards


@pytest.mark.parametrize("kind", ["inverse", "inverse-sigmoid"])
def test_remap_lambda_sampling_is_uniform_in_lambda(kind):
    cond = Remap(kind, T=None)
    d = Denoiser(SpyNet(), make_schedule("linear", continuous=True), condition=cond)
    lo, hi = cond.lambda_range()  # Table A5: U[0, K] for 1/t, U[-K, K] for inverse-sigmoid
    assert (lo, hi) == ((0.0, cond.K) if kind == "inverse" else (-cond.K, cond.K))
    t = sample_timesteps(d, 4000, generator=torch.Generator().manual_seed(0), sampling="remap-lambda").numpy()
    with np.errstate(divide="ignore"):
        lam = 1 / t if kind == "inverse" else np.log(t / (1 - t))  # λ = f(t) is recovered to rounding
    # (1/t: λ in [0, 1) lands on t = 1, λ = 1, a 1/K mass the KS test cannot see)
    assert stats.kstest(lam, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > 1e-3
    # and uniform-t sampling is far from uniform in λ (the test can tell the difference)
    t_u = sample_timesteps(d, 4000, generator=torch.Generator().manual_seed(0)).numpy()
    lam_u = cond(torch.from_numpy(t_u)).numpy()
    assert stats.kstest(lam_u, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue < 1e-6


def test_remap_lambda_sampling_discrete_gives_integer_timesteps():
    d = Denoiser(SpyNet(), make_schedule("linear"), condition=Remap("inverse", T=1000))
    t = sample_timesteps(d, 2000, generator=torch.Generator().manual_seed(0), sampling="remap-lambda")
    assert bool((t == t.round()).all()) and t.min() >= 0 and t.max() <= 999
    with pytest.raises(ValueError, match="Remap"):
        sample_timesteps(Denoiser(SpyNet(), make_schedule("linear"), condition=Identity()), 4, sampling="remap-lambda")
    with pytest.raises(ValueError, match="sampling"):
        sample_timesteps(Denoiser(SpyNet(), make_schedule("linear")), 4, sampling="bogus")
