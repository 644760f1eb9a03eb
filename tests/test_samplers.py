"""Samplers against independent references (issue 2).

* DDIM(η = 0) ≡ DPM-Solver-1, step for step (Lu et al. 2022, Eq. 3.7 / Sec. 4.1).
* Peer: diffusers' DDIM / DDPM / DPMSolverSinglestep / DPMSolverMultistep schedulers on the same
  table and the same model, their grids replayed through ``timesteps=`` / ``orders=``.
  diffusers keeps its tables in float32; the step-for-step checks inject our float64 table into
  the scheduler (its update arithmetic then runs in float64); separate checks bound the float32
  table's distance from ours and an unmodified float32 run's distance from our float64 one
  (1e-5). DPMSolverMultistep casts the sample to float32 in every step, so that comparison uses a
  float32-sized tolerance.
* Convergence orders on the analytic Gaussian mixture against a DOP853 probability-flow solution.
* DDPM / DDIM reproduce the mixture: sliced Wasserstein distance (etsdm.metrics) near the
  true-vs-true floor.
* Exact NFE, order splits (Lu et al. Sec. 3.4), spacings, argument errors, v-prediction on
  zero-SNR, and a Denoiser with E-TSDM timestep sharing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler
from scipy.integrate import solve_ivp

from etsdm import (
    SAMPLERS,
    Denoiser,
    GaussianMixture,
    TimestepSharing,
    make_schedule,
    plan,
    sample,
    singlestep_orders,
    time_grid,
)
from etsdm.metrics import sliced_wasserstein
from etsdm.samplers import SAMPLER_REGISTRY, evaluation_times
from etsdm.schedules import Schedule

pytestmark = pytest.mark.usefixtures("single_thread")  # many tiny tensor ops: one intra-op thread (conftest)

T = 1000
MIXTURE = GaussianMixture.ring(k=8, radius=2.0, std=0.1)


@pytest.fixture(scope="module")
def discrete():
    return make_schedule("linear", T=T)


@pytest.fixture(scope="module")
def continuous():
    return make_schedule("linear", T=T, continuous=True)


def _noise(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _trace(model, noise, schedule, sampler, nfe, **kw):
    """Final sample and the (t, s, x) of every step, from the callback."""
    steps = []
    out = sample(model, noise, schedule, sampler, nfe, callback=lambda st: steps.append((st.t, st.s, st.x)), **kw)
    return out, steps


# ---------------------------------------------------------------------------------------------
# 1. DDIM(η = 0) ≡ DPM-Solver-1
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("spacing", ["time-uniform", "logSNR"])
def test_ddim_equals_dpm_solver_1_step_for_step(kind, spacing, request):
    schedule = request.getfixturevalue(kind)
    model = MIXTURE.eps_model(schedule)
    # same plan for both (DDIM lands on the data by default, DPM-Solver-1 stops at t_min as Lu et al.)
    _, ddim = _trace(model, _noise(), schedule, "ddim", 25, spacing=spacing, denoise_to_zero=True)
    _, dpm1 = _trace(model, _noise(), schedule, "dpm-solver-1", 25, spacing=spacing, denoise_to_zero=True)
    assert len(ddim) == len(dpm1) == 25
    for (t_a, s_a, x_a), (t_b, s_b, x_b) in zip(ddim, dpm1, strict=True):
        assert (t_a, s_a) == (t_b, s_b)
        torch.testing.assert_close(x_a, x_b, rtol=1e-11, atol=1e-11)


# ---------------------------------------------------------------------------------------------
# 2. Peer: diffusers' schedulers on the same table and model
# ---------------------------------------------------------------------------------------------
def _mixture_model(schedule):
    eps = MIXTURE.eps_model(schedule)
    return lambda x, t: eps(x, float(t))


def _inject_table(scheduler, schedule) -> None:
    """Replace diffusers' float32 ᾱ table by ours (float64) so its updates run in float64."""
    scheduler.alphas_cumprod = schedule.alphas_cumprod()
    scheduler.final_alpha_cumprod = scheduler.one = torch.tensor(1.0, dtype=torch.float64)


def _inject_sigmas(scheduler, schedule, last: float | None) -> None:
    """DPM-Solver schedulers keep σ/α (float32) at their grid; rebuild it from our table in float64."""
    abar = schedule.alphas_cumprod()[scheduler.timesteps]
    tail = [] if last is None else [last]
    scheduler.sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.tensor(tail, dtype=torch.float64)])


def _run_diffusers(scheduler, model, noise, **step_kwargs):
    """diffusers' own denoising loop; returns the sample after every scheduler step."""
    x, xs = noise.clone(), []
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, int(t)), t, x, **step_kwargs).prev_sample
        xs.append(x)
    return xs


def test_diffusers_linear_table_matches_ours(discrete):
    """Independent table: diffusers builds ᾱ from β = linspace(1e-4, 0.02) in float32."""
    theirs = DDIMScheduler(beta_schedule="linear").alphas_cumprod.double()
    torch.testing.assert_close(theirs, discrete.alphas_cumprod(), rtol=2e-5, atol=0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(discrete, eta):
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sched.set_timesteps(50)
    _inject_table(sched, discrete)
    model, noise = _mixture_model(discrete), _noise()
    ref = _run_diffusers(sched, model, noise, eta=eta, generator=torch.Generator().manual_seed(1))
    times = [float(t) for t in sched.timesteps] + [-1.0]  # diffusers' grid, then the data point
    ours, steps = _trace(
        model, noise, discrete, "ddim", 0, eta=eta, timesteps=times, generator=torch.Generator().manual_seed(1)
    )
    for (_, _, x), x_ref in zip(steps, ref, strict=True):
        torch.testing.assert_close(x, x_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variance, their_variance", [("beta", "fixed_large"), ("posterior", "fixed_small")])
def test_ddpm_matches_diffusers(discrete, variance, their_variance):
    """Same z sequence: both draw torch.randn(shape, generator, float64) once per noisy step."""
    sched = DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type=their_variance)
    sched.set_timesteps(100)
    _inject_table(sched, discrete)
    model, noise = _mixture_model(discrete), _noise()
    ref = _run_diffusers(sched, model, noise, generator=torch.Generator().manual_seed(3))
    times = [float(t) for t in sched.timesteps] + [-1.0]
    _, steps = _trace(
        model,
        noise,
        discrete,
        "ddpm",
        0,
        variance=variance,
        timesteps=times,
        generator=torch.Generator().manual_seed(3),
    )
    for (_, _, x), x_ref in zip(steps, ref, strict=True):
        torch.testing.assert_close(x, x_ref, rtol=1e-9, atol=1e-9)


def _groups(order_list: list[int]) -> list[int]:
    """diffusers' singlestep order_list ([1, 2, 3, 1, 2, 1, ...]) -> our per-step orders ([3, 2, ...])."""
    out: list[int] = []
    for o in order_list:
        if o == 1:
            out.append(1)  # a new step starts
        else:
            out[-1] += 1  # one more evaluation inside the current step
    return out


def _singlestep_reference(discrete, order: int, steps: int):
    """diffusers' DPM-Solver (noise prediction, midpoint) in float64; returns scheduler and samples.

    algorithm_type="dpmsolver" refuses final_sigmas_type="zero", so its last step lands on
    σ_min, i.e. our t = 0 (not the data point t = -1).
    """
    sched = DPMSolverSinglestepScheduler(
        beta_schedule="linear",
        solver_order=order,
        algorithm_type="dpmsolver",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="sigma_min",
    )
    sched.set_timesteps(steps)
    _inject_sigmas(sched, discrete, last=math.sqrt((1 - discrete.alphas_cumprod()[0]) / discrete.alphas_cumprod()[0]))
    model, noise = _mixture_model(discrete), _noise()
    return sched, _run_diffusers(sched, model, noise), model, noise


@pytest.mark.parametrize("order, steps", [(2, 20), (2, 11), (3, 21), (3, 20), (3, 19)])
def test_dpm_solver_singlestep_matches_diffusers(discrete, order, steps):
    sched, ref, model, noise = _singlestep_reference(discrete, order, steps)
    orders = _groups(sched.order_list)
    times = [float(t) for t in sched.timesteps] + [0.0]
    ends = np.cumsum(orders) - 1  # diffusers' sample index where each of our steps ends
    _, trace = _trace(
        model,
        noise,
        discrete,
        f"dpm-solver-{order}",
        0,
        timesteps=times,
        orders=orders,
        third_order_intermediate="midpoint",
    )
    assert len(trace) == len(orders)
    for (_, s, x), k in zip(trace, ends, strict=True):
        assert s == times[k + 1]
        torch.testing.assert_close(x, ref[k], rtol=1e-10, atol=1e-10)


def test_dpm_solver_3_lu_intermediate_differs_from_diffusers(discrete):
    """Lu et al.'s u2 (Alg. 2) is not diffusers' midpoint u2: the check above can fail."""
    sched, ref, model, noise = _singlestep_reference(discrete, 3, 21)
    times = [float(t) for t in sched.timesteps] + [0.0]
    ours = sample(model, noise, discrete, "dpm-solver-3", 0, timesteps=times, orders=_groups(sched.order_list))
    gap = float((ours - ref[-1]).abs().max())
    assert 1e-6 < gap < 0.1  # different rule, same order: close, but far beyond float64 round-off


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_pp_2m_matches_diffusers(discrete, steps):
    """diffusers casts the sample to float32 each step (scheduling_dpmsolver_multistep.step): float32 tolerance."""
    sched = DPMSolverMultistepScheduler(
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    _inject_sigmas(sched, discrete, last=0.0)
    used: list[int] = []  # which update diffusers applies at each step
    first, second = sched.dpm_solver_first_order_update, sched.multistep_dpm_solver_second_order_update
    sched.dpm_solver_first_order_update = lambda *a, **k: (used.append(1), first(*a, **k))[1]
    sched.multistep_dpm_solver_second_order_update = lambda *a, **k: (used.append(2), second(*a, **k))[1]
    model, noise = _mixture_model(discrete), _noise()
    ref = _run_diffusers(sched, model, noise)
    assert used == plan(discrete, "dpm-solver++2m", steps, denoise_to_zero=True)[1]  # diffusers lands on σ = 0
    times = [float(t) for t in sched.timesteps] + [-1.0]
    _, trace = _trace(model, noise, discrete, "dpm-solver++2m", 0, timesteps=times, orders=used)
    for (_, _, x), x_ref in zip(trace, ref, strict=True):
        torch.testing.assert_close(x, x_ref.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver-3"])
def test_unmodified_float32_diffusers_agrees_to_float32_precision(discrete, sampler):
    """No injection: diffusers' own float32 table, float32 samples and model outputs vs ours in float64."""
    if sampler == "ddim":
        sched = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
        sched.set_timesteps(50)
        times, orders = [float(t) for t in sched.timesteps] + [-1.0], None
    else:
        sched = DPMSolverSinglestepScheduler(
            beta_schedule="linear", solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"
        )
        sched.set_timesteps(21)
        times, orders = [float(t) for t in sched.timesteps] + [0.0], _groups(sched.order_list)
    model, noise = _mixture_model(discrete), _noise()
    ref = _run_diffusers(sched, lambda x, t: model(x.double(), t).float(), noise.float())[-1]
    ours = sample(
        model, noise, discrete, sampler, 0, timesteps=times, orders=orders, third_order_intermediate="midpoint"
    )
    assert ref.dtype == torch.float32
    torch.testing.assert_close(ours, ref.double(), rtol=0, atol=1e-5)  # measured ~1e-6 on |x| <~ 2.5


# ---------------------------------------------------------------------------------------------
# 3. Convergence orders against a high-accuracy probability-flow ODE solution
# ---------------------------------------------------------------------------------------------
T_END = 1e-3


@pytest.fixture(scope="module")
def flow_reference(continuous):
    """x(t_end) of dx/dt = f x - ½ g² ∇log q_t, f = dlog α/dt, g² = dσ²/dt - 2 f σ² = -2 f (VP),

    i.e. dx/dt = f (x + ∇log q_t) = f (x - ε*/σ), by DOP853 from t = 1 (rtol 1e-11)."""
    x1 = _noise(32, seed=5)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y.reshape(-1, 2))
        f = float(continuous.dalpha_dt(t) / continuous.alpha(t))
        return (f * (x - MIXTURE.eps(x, t, continuous) / float(continuous.sigma(t)))).numpy().ravel()

    sol = solve_ivp(rhs, (1.0, T_END), x1.numpy().ravel(), method="DOP853", rtol=1e-11, atol=1e-12)
    assert sol.success
    return x1, torch.from_numpy(sol.y[:, -1].reshape(-1, 2))


# NFE ranges in the asymptotic regime (measured); DPM-Solver-3 with NFE ≡ 2 (mod 3), so that the
# split is [3, ..., 3, 2] (a first-order tail step would cap the global order at 2).
@pytest.mark.parametrize(
    "sampler, order, nfes, extra",
    [
        ("dpm-solver-1", 1, [50, 100, 200, 400], {}),
        ("dpm-solver-2", 2, [80, 160, 320], {}),
        ("dpm-solver-3", 3, [80, 161, 320], {}),
        ("dpm-solver-3", 3, [80, 161, 320], {"third_order_intermediate": "midpoint"}),
        ("dpm-solver++2m", 2, [40, 80, 160], {}),
    ],
)
def test_convergence_order(continuous, flow_reference, sampler, order, nfes, extra):
    x1, ref = flow_reference
    model = MIXTURE.eps_model(continuous)
    errs = []
    for nfe in nfes:
        out = sample(model, x1, continuous, sampler, nfe, spacing="logSNR", denoise_to_zero=False, t_end=T_END, **extra)
        errs.append(float((out - ref).pow(2).mean().sqrt()))
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (sampler, errs, slope)


# ---------------------------------------------------------------------------------------------
# 4. DDPM / DDIM reproduce the mixture (sliced Wasserstein near the true-vs-true floor)
# ---------------------------------------------------------------------------------------------
def _sw_over_floor(samples: torch.Tensor, g: torch.Generator, n: int = 2000) -> float:
    """Mean SW(samples_k, true) / mean SW(true', true) over the len(samples) // n chunks of size n.

    Sliced W_1 (etsdm.metrics), not W_2: on the ring, W_2 is dominated by the multinomial fluctuation
    of the mode weights and barely sees a wrong mode width (measured)."""
    dist, floor = [], []
    for k in range(len(samples) // n):
        true_a, true_b = MIXTURE.sample(n, g), MIXTURE.sample(n, g)
        chunk = samples[k * n : (k + 1) * n]
        dist.append(sliced_wasserstein(chunk, true_a, generator=torch.Generator().manual_seed(k)))
        floor.append(sliced_wasserstein(true_b, true_a, generator=torch.Generator().manual_seed(k)))
    return float(np.mean(dist) / np.mean(floor))


SW_FACTOR = 1.5  # a ring with std 0.2 instead of 0.1, or radius 2.1 instead of 2, scores > 1.5 (below)


@pytest.mark.parametrize("sampler, nfe", [("ddpm", 1000), ("ddim", 100)])
def test_sampler_reproduces_mixture(discrete, sampler, nfe):
    """3 seeds x 2000 samples, drawn in one batch; exact ε* of the mixture as the model."""
    g = torch.Generator().manual_seed(100)
    x = sample(
        MIXTURE.eps_model(discrete),
        torch.randn(6000, 2, generator=g, dtype=torch.float64),
        discrete,
        sampler,
        nfe,
        generator=g,
    )
    assert _sw_over_floor(x, g) < SW_FACTOR


@pytest.mark.parametrize("wrong", [GaussianMixture.ring(std=0.2), GaussianMixture.ring(radius=2.1)])
def test_sliced_wasserstein_detects_a_wrong_distribution(wrong):
    g = torch.Generator().manual_seed(100)
    assert _sw_over_floor(wrong.sample(6000, g), g) > SW_FACTOR


# ---------------------------------------------------------------------------------------------
# 5. NFE, order splits, spacings, arguments
# ---------------------------------------------------------------------------------------------
class Counting:
    """An ε-model that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return 0.1 * x


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("denoise_to_zero", [True, False])
def test_nfe_exact(kind, denoise_to_zero, request):
    schedule = request.getfixturevalue(kind)
    for sampler in SAMPLERS:
        for nfe in [*range(1, 13), 20, 50]:
            model = Counting()
            out = sample(
                model,
                torch.ones(4, 2),
                schedule,
                sampler,
                nfe,
                denoise_to_zero=denoise_to_zero,
                spacing="logSNR",
                generator=torch.Generator().manual_seed(0),
            )
            assert model.calls == nfe, (sampler, nfe)
            assert torch.isfinite(out).all()
            times, orders = plan(schedule, sampler, nfe, denoise_to_zero=denoise_to_zero)
            spec = SAMPLER_REGISTRY[sampler]  # evaluations and grid intervals per step, by layout
            assert sum(spec.cost(o) for o in orders) == nfe == len(evaluation_times(sampler, times, orders))
            assert sum(spec.span(o) for o in orders) == len(times) - 1
            assert len(times) - 1 == (len(orders) if spec.layout != "singlestep" else nfe)
            assert (times[-1] == schedule.t_data) == denoise_to_zero


def test_ddpm_with_nfe_T_walks_algorithm_a2(discrete):
    """NFE = T: every integer timestep T-1 .. 0, then the data point -1 (Alg. A2's T .. 1, 0)."""
    times, orders = plan(discrete, "ddpm", T)
    assert times == [float(t) for t in range(T - 1, -2, -1)] and orders == [1] * T


def test_order_splits_follow_lu_et_al():
    """Lu et al. (2022) Sec. 3.4. Order 3 also equals diffusers' singlestep order_list (grouped)."""
    for nfe in range(1, 60):
        k = nfe // 3 + 1
        expected3 = {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[nfe % 3]
        assert singlestep_orders(3, nfe) == expected3
        sched = DPMSolverSinglestepScheduler(solver_order=3, lower_order_final=True, final_sigmas_type="sigma_min")
        assert singlestep_orders(3, nfe) == _groups(sched.get_order_list(nfe))
        assert singlestep_orders(2, nfe) == [2] * (nfe // 2) + [1] * (nfe % 2)  # K = ⌈NFE/2⌉ steps
        assert singlestep_orders(1, nfe) == [1] * nfe


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_spacings_monotone_and_exact(kind, request):
    schedule = request.getfixturevalue(kind)
    t0, t1 = schedule.t_max, schedule.t_min
    for spacing in ("time-uniform", "logSNR", "time-quadratic"):
        grid = torch.tensor(time_grid(schedule, 16, spacing, t0, t1), dtype=torch.float64)
        assert grid[0] == t0 and grid[-1] == t1 and len(grid) == 17
        assert (grid.diff() < 0).all(), spacing
        if spacing == "time-uniform":
            step = grid.diff()
        elif spacing == "logSNR":
            step = schedule.lambda_(grid).diff()
        else:
            step = (grid - schedule.t_data).sqrt().diff()
        torch.testing.assert_close(step, step[0].expand_as(step), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "zero-snr"])
def test_closed_form_lambda_inverse_matches_bisection(name):
    """DiscreteSchedule.t_from_lambda (closed form) vs the generic Schedule.t_from_lambda (bisection)."""
    schedule = make_schedule(name, T=T)
    t = torch.cat([torch.linspace(-0.9, 990.3, 401, dtype=torch.float64), torch.arange(-1.0, 991.0)])
    lam = schedule.lambda_(t)
    bisection = Schedule.t_from_lambda(schedule, lam)
    torch.testing.assert_close(schedule.t_from_lambda(lam), bisection, rtol=0, atol=1e-9)
    torch.testing.assert_close(schedule.t_from_lambda(lam), t, rtol=0, atol=1e-9)


def test_singlestep_intermediate_points_split_lambda(continuous):
    """Order 3: r = 1/3, 2/3; order 2: r = 1/2 of each outer step in λ; outer steps equal in λ."""
    times, orders = plan(continuous, "dpm-solver-3", 8, spacing="logSNR", denoise_to_zero=False)
    lam = continuous.lambda_(torch.tensor(times, dtype=torch.float64))
    assert orders == [3, 3, 2]
    h = float(lam[3] - lam[0])
    for start, order in [(0, 3), (3, 3), (6, 2)]:
        step = lam[start : start + order + 1].diff()
        torch.testing.assert_close(step, torch.full((order,), h / order, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "lms"}, "unknown sampler"),
        ({"nfe": 0}, "nfe must be"),
        ({"nfe": 2.5}, "nfe must be"),
        ({"t_start": 10.0, "t_end": 10.0}, "t_end"),
        ({"t_start": 10.0, "t_end": 20.0}, "t_end"),
        ({"t_start": 2000.0}, "t_max"),
        ({"spacing": "exponential"}, "unknown spacing"),
        ({"variance": "learned"}, "variance"),
        ({"eta": -1.0}, "eta"),
        ({"third_order_intermediate": "heun"}, "third_order_intermediate"),
        ({"timesteps": [10.0, 20.0]}, "decreasing"),
        ({"sampler": "ddim", "timesteps": [10.0, 5.0, -1.0], "orders": [2]}, "orders"),
        ({"sampler": "dpm-solver-2", "timesteps": [10.0, 5.0, -1.0], "orders": [1]}, "cover"),
        ({"sampler": "dpm-solver++2m", "timesteps": [999.0, 500.0, -1.0], "orders": [1, 2]}, "into the data"),
    ],
)
def test_bad_arguments_raise(discrete, kwargs, message):
    args = {"sampler": "dpm-solver-3", "nfe": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(Counting(), torch.zeros(2, 2), discrete, **args)


# ---------------------------------------------------------------------------------------------
# 6. Denoisers: v-prediction on zero terminal SNR, E-TSDM timestep sharing
# ---------------------------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    """A fixed random MLP net(x, c) on 2-D data; records the conditions it was given."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, c):
        self.seen.append(c)
        return self.body(torch.cat([x, c[:, None] / T], 1))


@pytest.mark.parametrize("continuous_time", [False, True])
def test_v_prediction_on_zero_snr_is_finite(continuous_time):
    schedule = make_schedule("zero-snr", T=T, continuous=continuous_time)
    denoiser = Denoiser(TinyNet(), schedule, prediction="v")
    for sampler in SAMPLERS:
        out = sample(
            denoiser,
            torch.randn(8, 2, generator=torch.Generator().manual_seed(0)),
            schedule,
            sampler,
            12,
            spacing="logSNR",
            generator=torch.Generator().manual_seed(1),
        )
        assert torch.isfinite(out).all(), sampler


def test_denoiser_with_timestep_sharing_sees_shared_conditions(discrete):
    sharing = TimestepSharing(100, 5, T=T)
    for sampler in SAMPLERS:
        net = TinyNet()
        times, orders = plan(discrete, sampler, 30, spacing="time-quadratic")
        out = sample(
            Denoiser(net, discrete, condition=sharing),
            torch.randn(4, 2),
            discrete,
            sampler,
            30,
            spacing="time-quadratic",
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.isfinite(out).all() and len(net.seen) == 30
        seen = torch.stack([c[0] for c in net.seen]).double()
        evaluated = torch.tensor(evaluation_times(sampler, times, orders), dtype=torch.float64)
        torch.testing.assert_close(seen, sharing(evaluated).float().double())
        assert (seen[evaluated < 100] % 20 == 0).all()
