"""Samplers on EDM and flow matching (issue 9): every sampler on every process.

* Peer, step for step: our ``euler`` on EDM vs diffusers' EDMEulerScheduler and on flow vs
  FlowMatchEulerDiscreteScheduler (shift 1): both cast the sample to float32 in every step
  (``sample.to(torch.float32)`` in ``step``), so agreement is to float32 precision (measured ~4e-7
  relative; bound 2e-6). Our ``dpm-solver++2m`` on EDM vs EDMDPMSolverMultistepScheduler with its
  σ's injected in float64: float64 agreement (measured ~1e-15; bound 1e-12). Their grids (Karras
  ρ = 7 in σ; uniform in t for flow) equal our ``karras`` / ``time-uniform`` plans.
* EDM Algorithm 2 (stochastic churn), transcribed from the paper: our ``heun`` with ``s_churn`` is
  it step for step (same generator; 1e-12).
* Measured orders on the exact Gaussian mixture against a DOP853 probability-flow solution (in λ):
  Euler 1, Heun 2, DPM-Solver-2 2, DPM-Solver-3 3, DPM-Solver++(2M) 2, on EDM and flow.
* With the exact denoiser, EDM Heun (with and without churn) and flow Euler / Heun reproduce the
  mixture: mode shares, spread within modes, ring radius.
* Identities: Euler = DDIM on EDM and flow (both processes are affine in t); flow predictions
  stay exact at α = 0 (t = 1); ``karras`` spacing on every process.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler, FlowMatchEulerDiscreteScheduler
from scipy.integrate import solve_ivp

from etsdm import Denoiser, GaussianMixture, make_schedule, plan, sample
from etsdm.denoiser import Estimate
from etsdm.samplers import SAMPLERS, default_spacing, evaluation_times, init_noise_sigma, time_grid

pytestmark = pytest.mark.usefixtures("single_thread")

MIXTURE = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
EDM_CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}  # EDM Table 5 (ImageNet-64)


@pytest.fixture(scope="module")
def edm():
    return make_schedule("edm")


@pytest.fixture(scope="module")
def flow():
    return make_schedule("flow")


class Exact:
    """The mixture's exact (ε*, x̂0*) at time t of any process: ε* = -σ ∇log q_t and, by Tweedie,
    x̂0* = (x + σ² ∇log q_t)/α (EDM's D(x; σ) directly, no cancellation). ``prediction`` is neither
    ε nor v/x0/flow, so the samplers use its estimate everywhere (α floored at flow's t = 1)."""

    prediction = "exact"

    def __init__(self, schedule):
        self.schedule = schedule

    def estimate(self, x: torch.Tensor, t: float) -> Estimate:
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        score = MIXTURE.score(x, t, self.schedule)
        return Estimate(-s * score, (x + s * s * score) / a)


def _noise(schedule, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return init_noise_sigma(schedule) * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _steps(model, noise, schedule, sampler, **kw) -> list[torch.Tensor]:
    xs: list[torch.Tensor] = []
    sample(model, noise, schedule, sampler, 0, callback=lambda st: xs.append(st.x), **kw)
    return xs


# ---------------------------------------------------------------------------------------------
# 1. Peer: diffusers' EDM and flow-matching schedulers
# ---------------------------------------------------------------------------------------------
def test_init_noise_sigma_and_default_spacings(edm, flow):
    assert init_noise_sigma(edm) == pytest.approx(80.0, rel=1e-15) and init_noise_sigma(flow) == 1.0
    assert init_noise_sigma(make_schedule("linear")) == 1.0  # x_T ~ N(0, I) (Ho et al.)
    assert (default_spacing(edm), default_spacing(flow)) == ("karras", "time-uniform")
    assert default_spacing(make_schedule("linear")) == "linspace"
    assert default_spacing(make_schedule("linear", continuous=True)) == "time-uniform"


@pytest.mark.parametrize("steps", [18, 40])
def test_karras_grid_is_diffusers_edm_grid(edm, steps):
    """EDM: our default plan (N evaluations -> N σ's, then the data) = diffusers' Karras σ's, to float64
    (its float64 formula) and to its stored float32 grid."""
    times, _ = plan(edm, "euler", steps)
    sched = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sched.set_timesteps(steps)
    exact = sched._compute_karras_sigmas(torch.linspace(0, 1, steps, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(times[:-1], dtype=torch.float64), exact, rtol=1e-13, atol=0)
    torch.testing.assert_close(torch.tensor(times, dtype=torch.float64), sched.sigmas.double(), rtol=1e-7, atol=0)
    assert times[-1] == 0.0 and times[0] == 80.0 and times[-2] == 0.002


@pytest.mark.parametrize("steps", [10, 18])
def test_euler_matches_diffusers_edm_euler(edm, steps):
    """A fixed D(x; σ) (the mixture's exact x̂0) handed to EDMEulerScheduler as ``pred_original_sample``."""
    sched = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sched.set_timesteps(steps)
    model, noise = Exact(edm), _noise(edm)
    x, ref = noise.clone(), []
    for i, t in enumerate(sched.timesteps):
        d = model.estimate(x, float(sched.sigmas[i])).x0
        x = sched.step(torch.zeros_like(x), t, x, pred_original_sample=d).prev_sample
        ref.append(x)
    ours = _steps(model, noise, edm, "euler", timesteps=[float(s) for s in sched.sigmas])
    assert len(ours) == len(ref) == steps
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)  # diffusers' float32 sample


@pytest.mark.parametrize("steps", [10, 28])
def test_euler_matches_diffusers_flow_match_euler(flow, steps):
    """FlowMatchEulerDiscreteScheduler (shift 1) with the exact velocity ε̂ - x̂0; its σ's (= t,
    1 .. 1/1000, then 0) replayed as our times; equal to our default time-uniform plan."""
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(steps)
    times = [float(s) for s in sched.sigmas]
    torch.testing.assert_close(torch.tensor(plan(flow, "euler", steps)[0]), torch.tensor(times), rtol=0, atol=1e-7)
    model, noise = Exact(flow), _noise(flow)
    x, ref = noise.clone(), []
    for i, t in enumerate(sched.timesteps):
        est = model.estimate(x, times[i])
        x = sched.step(est.eps - est.x0, t, x).prev_sample
        ref.append(x)
    ours = _steps(model, noise, flow, "euler", timesteps=times)
    assert len(ours) == len(ref) == steps
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)  # diffusers' float32 sample


@pytest.mark.parametrize("steps", [10, 18, 25])
def test_dpm_solver_pp_2m_matches_diffusers_edm_dpmsolver(edm, steps):
    """EDMDPMSolverMultistepScheduler (dpmsolver++, order 2, final σ = 0) in float64: its σ's as float64,
    its data prediction replaced by the exact D. Orders: diffusers' (first and last step first order)
    = our plan with the final step into the data."""
    sched = EDMDPMSolverMultistepScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0, solver_order=2,
                                           algorithm_type="dpmsolver++", final_sigmas_type="zero")
    sched.set_timesteps(steps)
    sched.sigmas = sched.sigmas.double()
    sched.precondition_outputs = lambda sample, model_output, sigma: model_output  # the model returns D
    used: list[int] = []
    first, second = sched.dpm_solver_first_order_update, sched.multistep_dpm_solver_second_order_update
    sched.dpm_solver_first_order_update = lambda *a, **k: (used.append(1), first(*a, **k))[1]
    sched.multistep_dpm_solver_second_order_update = lambda *a, **k: (used.append(2), second(*a, **k))[1]
    model, noise = Exact(edm), _noise(edm)
    x, ref = noise.clone(), []
    for i, t in enumerate(sched.timesteps):
        x = sched.step(model.estimate(x, float(sched.sigmas[i])).x0, t, x).prev_sample
        ref.append(x)
    times, orders = plan(edm, "dpm-solver++2m", steps, denoise_to_zero=True)
    assert used == orders and orders[0] == orders[-1] == 1
    grid = torch.tensor(times, dtype=torch.float64)
    torch.testing.assert_close(grid, sched.sigmas, rtol=3e-6, atol=0)  # its Karras ramp is float32
    ours = _steps(model, noise, edm, "dpm-solver++2m", timesteps=sched.sigmas.tolist(), orders=used)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _edm_algorithm_2(denoise, x, sigmas, g, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al. (2022) Algorithm 2, line by line (σ(t) = t, s(t) = 1)."""
    n = len(sigmas) - 1
    for i in range(n):
        t, t_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t <= s_tmax else 0.0
        t_hat = t + gamma * t
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t**2) * s_noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
        d = (x - denoise(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next != 0:
            d_prime = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


@pytest.mark.parametrize("churn", [{}, EDM_CHURN])
def test_heun_is_edm_algorithm_1_and_2(edm, churn):
    """N = 18 steps, 2N - 1 = 35 evaluations (EDM's CIFAR-10 setting); churn on σ in [0.05, 50]."""
    model, noise = Exact(edm), _noise(edm)
    times, orders = plan(edm, "heun", 35)
    assert orders == [2] * 17 + [1] and len(times) == 19 and times[-1] == 0.0
    options = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0, **churn}
    ref = _edm_algorithm_2(lambda x, s: model.estimate(x, s).x0, noise, times, torch.Generator().manual_seed(3),
                           **options)
    ours = sample(model, noise, edm, "heun", 35, generator=torch.Generator().manual_seed(3), **churn)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_churn_on_a_general_process_raises_sigma_over_alpha(flow):
    """Flow: the first evaluation of each churned step is at t̂ with σ̃(t̂) = (1 + γ) σ̃(t), σ̃ = σ/α."""
    seen: list[float] = []

    class Recording(Exact):
        def estimate(self, x, t):
            seen.append(float(t))
            return super().estimate(x, t)

    times, orders = plan(flow, "euler", 10, t_start=0.9)
    sample(Recording(flow), _noise(flow), flow, "euler", 10, t_start=0.9, s_churn=2.0, s_tmin=0.5, s_tmax=5.0,
           generator=torch.Generator().manual_seed(0))
    gamma = min(2.0 / len(orders), math.sqrt(2) - 1)
    for t, t_eval in zip(times[:-1], seen, strict=True):
        ratio = (t / (1 - t), t_eval / (1 - t_eval))  # σ̃ at the grid point and where evaluated
        if 0.5 <= ratio[0] <= 5.0:
            assert ratio[1] == pytest.approx((1 + gamma) * ratio[0], rel=1e-12)
        else:
            assert t_eval == t


# ---------------------------------------------------------------------------------------------
# 2. Convergence orders on the exact mixture (DOP853 in λ as the reference)
# ---------------------------------------------------------------------------------------------
RANGES = {"edm": (80.0, 0.002), "flow": (0.999, 1e-3)}  # flow: t_start below α's floor band (1 - 2^-12, 1]


@pytest.fixture(scope="module")
def references(edm, flow):
    """x(t_end) of dx/dλ = (α' x̂0 + σ' ε̂) / λ'(t), t = t_from_lambda(λ), by DOP853 (rtol 1e-11)."""
    out = {}
    for schedule in (edm, flow):
        t0, t1 = RANGES[schedule.name]
        model, x = Exact(schedule), _noise(schedule, 16, seed=5)

        def rhs(lam, y, schedule=schedule, model=model):
            t = float(schedule.t_from_lambda(lam))
            est = model.estimate(torch.from_numpy(y.reshape(-1, 2)), t)
            drift = float(schedule.dalpha_dt(t)) * est.x0 + float(schedule.dsigma_dt(t)) * est.eps
            return (drift / float(schedule.dlog_alpha_dt(t) - schedule.dlog_sigma_dt(t))).numpy().ravel()

        lam = (float(schedule.lambda_(t0)), float(schedule.lambda_(t1)))
        sol = solve_ivp(rhs, lam, x.numpy().ravel(), method="DOP853", rtol=1e-11, atol=1e-12)
        assert sol.success
        out[schedule.name] = (x, torch.from_numpy(sol.y[:, -1].reshape(-1, 2)))
    return out


# NFE ranges in the asymptotic regime (measured). Euler / Heun on each process's default grid
# (EDM: Karras; flow: uniform t), the DPM-Solvers uniform in λ (Lu et al.).
ORDER_CASES = [
    ("euler", None, 1, [100, 200, 400]),
    ("heun", None, 2, [80, 160, 320, 640]),
    ("dpm-solver-2", "logSNR", 2, [80, 160, 320]),
    ("dpm-solver-3", "logSNR", 3, [161, 320, 641]),
    ("dpm-solver++2m", "logSNR", 2, [40, 80, 160]),
]


@pytest.mark.parametrize("process", ["edm", "flow"])
@pytest.mark.parametrize("sampler, spacing, order, nfes", ORDER_CASES)
def test_convergence_order_on_processes(request, references, process, sampler, spacing, order, nfes):
    schedule = request.getfixturevalue(process)
    x, ref = references[process]
    t0, t1 = RANGES[process]
    errs = []
    for nfe in nfes:
        out = sample(Exact(schedule), x, schedule, sampler, nfe, timestep_spacing=spacing, denoise_to_zero=False,
                     t_start=t0, t_end=t1)
        errs.append(float((out - ref).pow(2).mean().sqrt()))
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (process, sampler, errs, slope)


# ---------------------------------------------------------------------------------------------
# 3. The exact denoiser reproduces the mixture
# ---------------------------------------------------------------------------------------------
def _mixture_stats(x: torch.Tensor) -> tuple[float, float, float]:
    """Largest deviation of a mode's share from 1/8, the std within modes, the mean radius."""
    k = torch.cdist(x, MIXTURE.means).argmin(1)
    share = torch.bincount(k, minlength=8).double() / len(x)
    return float((share - 1 / 8).abs().max()), float((x - MIXTURE.means[k]).std()), float(x.norm(dim=1).mean())


def _reproduces(x: torch.Tensor) -> bool:
    """4000 samples: shares within 0.025 of 1/8 (~5 binomial σ), spread within 8 % of 0.1, radius
    within 0.01 of E|x| = 2.0025."""
    share, spread, radius = _mixture_stats(x)
    return share < 0.025 and abs(spread - 0.1) < 0.008 and abs(radius - 2.0025) < 0.01


@pytest.mark.parametrize(
    "process, sampler, nfe, options",
    [
        ("edm", "heun", 79, {}),
        ("edm", "heun", 79, EDM_CHURN),
        ("flow", "euler", 100, {}),
        ("flow", "heun", 39, {}),
    ],
)
def test_exact_denoiser_reproduces_the_mixture(request, process, sampler, nfe, options):
    schedule = request.getfixturevalue(process)
    g = torch.Generator().manual_seed(1)
    noise = init_noise_sigma(schedule) * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x = sample(Exact(schedule), noise, schedule, sampler, nfe, generator=g, **options)
    assert _reproduces(x), _mixture_stats(x)


def test_mixture_check_detects_a_wrong_distribution():
    g = torch.Generator().manual_seed(2)
    assert _reproduces(MIXTURE.sample(4000, g))
    for wrong in (GaussianMixture.ring(std=0.115), GaussianMixture.ring(radius=2.03),
                  GaussianMixture(MIXTURE.means, 0.1, weights=[1.5] + [1.0] * 7)):
        assert not _reproduces(wrong.sample(4000, g))


# ---------------------------------------------------------------------------------------------
# 4. Identities and exactness
# ---------------------------------------------------------------------------------------------
def test_euler_equals_ddim_on_edm(edm):
    """α = 1, σ = t: DDIM's x_s = x̂0 + σ_s ε̂ is Euler's x + (s - t)(x - x̂0)/t (both affine in t)."""
    model, noise = Exact(edm), _noise(edm)
    for a, b in zip(_steps(model, noise, edm, "euler", timesteps=plan(edm, "euler", 12)[0]),
                    _steps(model, noise, edm, "ddim", timesteps=plan(edm, "euler", 12)[0]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class PointMassFlow(torch.nn.Module):
    """The exact velocity network u = ε - c for data δ_c on the flow process (t = the condition)."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c

    def forward(self, x, cond):
        t = cond[0].double()
        eps = (x - (1 - t) * self.c) / t
        return eps - self.c


def test_flow_prediction_is_exact_at_alpha_zero(flow):
    """At t = 1 (α = 0): x̂0 = x - u exactly for every sampler, which then lands on c; Euler = DDIM there."""
    c = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    den = Denoiser(PointMassFlow(c), flow, prediction="flow")
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sampler in SAMPLERS:
        first: list[torch.Tensor] = []
        out = sample(den, noise, flow, sampler, 12, denoise_to_zero=True, generator=torch.Generator().manual_seed(1),
                     callback=lambda st, first=first: first.append(st.x0) if not first else None)
        torch.testing.assert_close(first[0], c.expand_as(noise), rtol=0, atol=1e-12)
        torch.testing.assert_close(out, c.expand_as(noise), rtol=0, atol=1e-5)  # the net sees t in float32
    times = plan(flow, "euler", 12)[0]
    euler, ddim = (_steps(den, noise, flow, s, timesteps=times) for s in ("euler", "ddim"))
    torch.testing.assert_close(euler[0], ddim[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "edm", "flow"])
def test_karras_spacing_on_every_process(name):
    """σ̃ = σ/α = e^{-λ} of the grid is Karras et al.'s ρ = 7 ramp between the end points."""
    schedule = make_schedule(name, continuous=True) if name == "linear" else make_schedule(name)
    t0, t1 = schedule.t_max * 0.9, schedule.t_min
    grid = torch.tensor(time_grid(schedule, 12, "karras", t0, t1), dtype=torch.float64)
    assert grid[0] == t0 and grid[-1] == t1 and bool((grid.diff() < 0).all())
    root = torch.exp(-schedule.lambda_(grid) / 7)  # σ̃^{1/ρ}: uniform steps
    torch.testing.assert_close(root.diff(), root.diff()[0].expand(12), rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_every_sampler_runs_on_every_process_with_exact_nfe(name):
    schedule = make_schedule(name)
    for sampler in SAMPLERS:
        for nfe in (1, 2, 5, 12):
            calls: list[float] = []

            class Counting(Exact):
                def estimate(self, x, t, calls=calls):
                    calls.append(float(t))
                    return super().estimate(x, t)

            times, orders = plan(schedule, sampler, nfe)
            out = sample(Counting(schedule), _noise(schedule, 4), schedule, sampler, nfe,
                         generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(out).all(), (sampler, nfe)
            assert calls == evaluation_times(sampler, times, orders) and len(calls) == nfe, (sampler, nfe)


def test_churn_options_are_checked(edm):
    with pytest.raises(ValueError, match="applies to euler, heun"):
        sample(Exact(edm), _noise(edm, 2), edm, "ddim", 5, s_churn=1.0)
    with pytest.raises(ValueError, match="s_tmin <= s_tmax"):
        sample(Exact(edm), _noise(edm, 2), edm, "heun", 5, s_churn=1.0, s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="heun's step into the data"):
        sample(Exact(edm), _noise(edm, 2), edm, "heun", 0, timesteps=[80.0, 1.0, 0.0], orders=[1, 2])
