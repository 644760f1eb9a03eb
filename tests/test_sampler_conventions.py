"""Sampler conventions (issue 7, items 1, 2, 7, 10).

1. Discrete models are queried at trained integer timesteps by default (spy nets, baseline and
   E-TSDM); the integer grids are diffusers' ``timestep_spacing`` grids; ``fractional`` is explicit.
2. DPM-Solver-k at NFE N spends N evaluations as Lu et al. (Sec. 3.4 and their code); the final
   denoising step and diffusers' order list are options.
7. Zero terminal SNR: the configs are v-prediction (ε variants warn); α = 0 is exact for v models.
10. x̂0 clipping (static / dynamic), chosen per data kind, recorded with every result.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler

from etsdm import SAMPLERS, Denoiser, GaussianMixture, TimestepSharing, make_schedule, plan, sample
from etsdm.cli import main
from etsdm.conditioning import process_sharing
from etsdm.config import RunConfig, configs_dir, load_config
from etsdm.losses import diffusion_loss
from etsdm.runs import LoadedModel, describe_sampling, sample_settings
from etsdm.samplers import INTEGER_SPACINGS, clip_x0, evaluation_times, init_noise_sigma, singlestep_orders

pytestmark = pytest.mark.usefixtures("single_thread")

T = 1000


@pytest.fixture(scope="module")
def discrete():
    return make_schedule("linear", T=T)


class Spy(torch.nn.Module):
    """net(x, c): a fixed smooth function; records every condition c it is given."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x, c):
        self.seen.append(c.clone())
        return 0.1 * x + 1e-4 * c[:, None].to(x.dtype)


def _groups(order_list: list[int]) -> list[int]:
    """diffusers' singlestep order_list ([1, 2, 3, 1, 2, ...]) -> our per-step orders ([3, ...])."""
    out: list[int] = []
    for o in order_list:
        if o == 1:
            out.append(1)
        else:
            out[-1] += 1
    return out


# ---------------------------------------------------------------------------------------------
# 1. Integer timesteps by default
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("condition", ["baseline", "etsdm"])
def test_default_plans_query_trained_integer_timesteps_only(discrete, condition):
    """Every sampler, several NFE: the network only ever sees integers in 0..T-1."""
    sharing = TimestepSharing(100, 5, T=T) if condition == "etsdm" else None
    for sampler in SAMPLERS:
        for nfe in (7, 20, 50):
            net = Spy()
            times: list[float] = []

            def record(st, times=times):
                times.append(st.t)

            den = Denoiser(net, discrete, condition=sharing)
            out = sample(den, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)), discrete, sampler, nfe,
                         generator=torch.Generator().manual_seed(1), callback=record)
            seen = torch.cat(net.seen).double()
            assert len(net.seen) == nfe and torch.isfinite(out).all()
            bad = seen[seen != seen.round()]
            assert bad.numel() == 0, (sampler, nfe, bad[:5].tolist())
            assert seen.min() >= 0 and seen.max() <= T - 1
            assert all(float(t).is_integer() for t in times)  # the physical step times too


class TimedDenoiser(Denoiser):
    """Records the physical time of every network evaluation a sampler makes (``net_output``: the
    exact α = 0 path included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    def net_output(self, x, t):
        if not torch.is_tensor(t):
            self.times.append(float(t))
        return super().net_output(x, t)


@pytest.mark.parametrize("process, prediction", [("edm", "edm"), ("flow", "flow"), ("linear", "eps")])
def test_condition_reaches_the_network_on_every_process(process, prediction):
    """Every sampler (Euler / Heun also with churn), E-TSDM's default sharing on each process: the network
    receives c = net_time(f(t)) at exactly the planned evaluation times (EDM: c_noise = ¼ ln σ of the
    shared σ; flow and VP: the shared t), and the training loss at the same t gives the same c."""
    schedule = make_schedule(process, continuous=True)
    sharing = process_sharing(schedule)
    noise = init_noise_sigma(schedule) * torch.randn(3, 2, generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.float64)
    for sampler in SAMPLERS:
        for churn in ({}, {"s_churn": 5.0}) if sampler in ("euler", "heun") else ({},):
            net = Spy()
            den = TimedDenoiser(net, schedule, prediction=prediction, condition=sharing)
            times, orders = plan(schedule, sampler, 12)
            out = sample(den, noise, schedule, sampler, 12, generator=torch.Generator().manual_seed(1), **churn)
            assert torch.isfinite(out).all() and len(net.seen) == len(den.times) == 12, (sampler, churn)
            if not churn:
                assert den.times == evaluation_times(sampler, times, orders), sampler
            else:  # churn raises some steps' first evaluation above the grid
                assert sum(a > b for a, b in zip(den.times, evaluation_times(sampler, times, orders), strict=True))
            assert all(bool((c == c[0]).all()) for c in net.seen)
            seen = torch.stack([c[0] for c in net.seen])
            t = torch.tensor(den.times, dtype=torch.float64)
            shared = sharing(t)
            assert bool((shared < t).any())  # the walk visits the shared band
            expected = 0.25 * torch.log(shared) if process == "edm" else shared  # EDM Table 1's c_noise
            assert torch.equal(seen, expected.float()), (sampler, churn)
            net.seen.clear()
            diffusion_loss(den, torch.zeros(len(t), 2, dtype=torch.float64), t=t)
            assert len(net.seen) == 1 and torch.equal(net.seen[0], seen), (sampler, churn)


def test_fractional_grid_is_explicit(discrete):
    """The issue's example: time-uniform floats give 48 fractional conditions out of 50 (978.61, ...)."""
    evals = plan(discrete, "ddim", 50, timestep_spacing="fractional")[0][:-1]
    fractional = [t for t in evals if not float(t).is_integer()]
    assert len(evals) == 50 and len(fractional) == 48 and round(evals[1], 2) == 978.61
    assert all(float(t).is_integer() for t in plan(discrete, "ddim", 50)[0])


def test_integer_grids_equal_diffusers_timesteps(discrete):
    """Ours = diffusers' set_timesteps for each timestep_spacing (their rounding), NFE 1..120, 250, 500:
    DPMSolverMultistep's (plus the final σ_min point t = 0) for the DPM-Solvers; DDIMScheduler's
    N timesteps (then the data, t = -1) for DDIM, which lands on the data by default (trailing too:
    its N timesteps end at T/N - 1, not at 0)."""
    multi = {sp: DPMSolverMultistepScheduler(timestep_spacing=sp) for sp in INTEGER_SPACINGS}
    ddim = {sp: DDIMScheduler(timestep_spacing=sp) for sp in INTEGER_SPACINGS}
    single = DPMSolverSinglestepScheduler(solver_order=3, lower_order_final=True, final_sigmas_type="sigma_min")
    for n in [*range(1, 121), 250, 500]:
        for sp in INTEGER_SPACINGS:
            multi[sp].set_timesteps(n)
            times = plan(discrete, "dpm-solver++2m", n, timestep_spacing=sp)[0]
            # [:n]: for a few N (e.g. trailing, 61) diffusers' float np.arange yields one extra point, t = -1
            assert times == [float(t) for t in multi[sp].timesteps[:n]] + [0.0], (sp, n)
            if sp in ddim and n > 1:  # (diffusers' one-step linspace evaluates at t = 0 only)
                ddim[sp].set_timesteps(n)
                ours = plan(discrete, "ddim", n, timestep_spacing=sp)[0]
                assert ours == [float(t) for t in ddim[sp].timesteps[:n]] + [-1.0], (sp, n)
        single.set_timesteps(n)
        times, orders = plan(discrete, "dpm-solver-3", n)  # intermediate points on the integer grid
        assert times == [float(t) for t in single.timesteps] + [0.0] and orders == _groups(single.order_list)


def test_default_dpm_solver_3_replays_diffusers_singlestep(discrete):
    """Our default integer plan with diffusers' intermediate rule = DPMSolverSinglestepScheduler, step for
    step, in float64 (its table and σ's injected), on the analytic mixture's exact ε."""
    mixture = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    eps = mixture.eps_model(discrete)
    sched = DPMSolverSinglestepScheduler(solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min")
    sched.set_timesteps(20)
    abar = discrete.alphas_cumprod()
    sigmas = ((1 - abar[sched.timesteps]) / abar[sched.timesteps]).sqrt()
    sched.sigmas = torch.cat([sigmas, ((1 - abar[:1]) / abar[:1]).sqrt()])
    sched.alphas_cumprod = abar
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = noise.clone()
    for t in sched.timesteps:
        x = sched.step(eps(x, float(t)), t, x).prev_sample
    model = lambda z, t: eps(z, float(t))  # noqa: E731
    ours = sample(model, noise, discrete, "dpm-solver-3", 20, third_order_intermediate="midpoint")
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-9)


def test_integer_spacing_errors_are_clear(discrete):
    with pytest.raises(ValueError, match="discrete schedules"):
        plan(make_schedule("linear", continuous=True), "ddim", 10, timestep_spacing="linspace")
    with pytest.raises(ValueError, match="fractional"):
        plan(discrete, "dpm-solver-3", 2000, timestep_spacing="linspace")
    res = CliRunner().invoke(main, ["sample", "gmm", "--nfe", "2000", "--sampler", "dpm-solver-3", "--threads", "1"])
    assert res.exit_code == 2 and "fractional" in res.output


# ---------------------------------------------------------------------------------------------
# 2. Lu et al.'s NFE budget; final denoising step and diffusers' plan as options
# ---------------------------------------------------------------------------------------------
def test_dpm_solver_3_at_nfe_20_spends_the_budget_as_lu_et_al(discrete):
    times, orders = plan(discrete, "dpm-solver-3", 20)
    assert orders == [3, 3, 3, 3, 3, 3, 2] and len(times) == 21
    assert times[-1] == discrete.t_min  # stops at t_end = t_min (Lu et al.'s 1/N), no extra x̂0 step
    net = Spy()
    sample(Denoiser(net, discrete), torch.randn(2, 2), discrete, "dpm-solver-3", 20)
    assert len(net.seen) == 20 and float(net.seen[-1][0]) > discrete.t_min  # last evaluation inside the solver
    assert plan(discrete, "dpm-solver-2", 20)[1] == [2] * 10


@pytest.mark.parametrize("order, nfe", [(3, 20), (3, 21), (3, 50), (2, 20), (2, 11)])
def test_fractional_plan_follows_lu_et_al_code(discrete, order, nfe):
    """dpm-solver's get_orders_and_timesteps_for_singlestep_solver with skip_type='time_uniform': outer
    points at the order boundaries of the (NFE+1)-point uniform grid, intermediate points at r = 1/2
    or 1/3, 2/3 of each step in λ."""
    times, orders = plan(discrete, f"dpm-solver-{order}", nfe, timestep_spacing="fractional")
    assert orders == singlestep_orders(order, nfe)
    bounds = np.cumsum([0, *orders])
    uniform = torch.linspace(T - 1, 0, nfe + 1, dtype=torch.float64)
    outer = torch.tensor([times[i] for i in bounds], dtype=torch.float64)
    torch.testing.assert_close(outer, uniform[bounds], rtol=0, atol=1e-9)
    lam = discrete.lambda_(torch.tensor(times, dtype=torch.float64))
    for start, k in zip(bounds[:-1], orders, strict=True):
        step = lam[start : start + k + 1].diff()
        if k == 3:  # Lu et al.'s r1 = 1/3, r2 = 2/3
            torch.testing.assert_close(step, step.sum().expand(3) / 3, rtol=1e-7, atol=1e-9)
        elif k == 2:
            torch.testing.assert_close(step, step.sum().expand(2) / 2, rtol=1e-7, atol=1e-9)


def test_denoise_to_zero_and_diffusers_orders_are_options(discrete):
    times, orders = plan(discrete, "dpm-solver-3", 20, denoise_to_zero=True)
    assert times[-2:] == [0.0, -1.0] and orders == [3] * 6 + [1, 1] and sum(orders) == 20
    assert plan(discrete, "ddim", 20)[0][-1] == -1.0  # DDIM / DDPM land on the data by default
    assert plan(discrete, "ddim", 20, denoise_to_zero=False)[0][-1] == 0.0
    reference = DPMSolverSinglestepScheduler(solver_order=2, lower_order_final=True, final_sigmas_type="sigma_min")
    assert plan(discrete, "dpm-solver-2", 20, order_plan="diffusers")[1] == _groups(reference.get_order_list(20))
    assert plan(discrete, "dpm-solver-2", 20, order_plan="diffusers")[1] == [2] * 9 + [1, 1]


# ---------------------------------------------------------------------------------------------
# 7. Zero terminal SNR
# ---------------------------------------------------------------------------------------------
def test_zero_snr_configs_are_v_prediction_and_eps_variants_warn():
    paths = sorted((configs_dir() / "paper" / "schedules").glob("ffhq_zero-snr_*.yaml"))
    assert len(paths) == 8
    for p in paths:
        if "_eps_" in p.name:
            with pytest.warns(UserWarning, match="Lin et al"):
                assert load_config(p).diffusion.prediction == "eps"
        else:
            assert load_config(p).diffusion.prediction == "v", p.name


class PointMassV(torch.nn.Module):
    """The exact v-network for data δ_c under the zero-SNR schedule, with the true α (0 at t_max)."""

    def __init__(self, schedule, c: torch.Tensor):
        super().__init__()
        self.schedule, self.c = schedule, c

    def forward(self, x, cond):
        t = float(cond[0])
        a = 0.0 if t == self.schedule.t_max else float(self.schedule.alpha(t))
        s = math.sqrt(1.0 - a * a)
        eps = (x - a * self.c) / s
        return a * eps - s * self.c  # v = α ε - σ x0


@pytest.mark.parametrize("continuous", [False, True])
def test_v_prediction_handles_alpha_zero_exactly(continuous):
    """At t_max α = 0: x̂0 = -v exactly for every sampler (the floored α = 2^-12 was off by ~2e-4 |x|)."""
    schedule = make_schedule("zero-snr", T=T, continuous=continuous)
    c = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    den = Denoiser(PointMassV(schedule, c), schedule, prediction="v")
    noise = 5.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sampler in SAMPLERS:
        first: list[torch.Tensor] = []
        out = sample(den, noise, schedule, sampler, 12, generator=torch.Generator().manual_seed(1),
                     callback=lambda st, first=first: first.append(st.x0) if not first else None)
        assert torch.isfinite(out).all(), sampler
        torch.testing.assert_close(first[0], c.expand_as(noise), rtol=0, atol=1e-12)
    times, orders = plan(schedule, "dpm-solver-3", 12)
    assert orders[0] == 1 and sum(orders) == 12  # λ = -∞ at the start: one DDIM step, then Lu's split


def test_eps_prediction_at_zero_snr_warns():
    schedule = make_schedule("zero-snr", T=T)
    with pytest.warns(UserWarning, match="v-prediction"):
        sample(Denoiser(Spy(), schedule, prediction="eps"), torch.randn(2, 2), schedule, "ddim", 5)


# ---------------------------------------------------------------------------------------------
# 10. x̂0 clipping
# ---------------------------------------------------------------------------------------------
def test_clip_x0_static_and_dynamic():
    g = torch.Generator().manual_seed(0)
    x0 = torch.cat([3.0 * torch.randn(2, 1, 20, 20, generator=g), 0.5 * torch.rand(1, 1, 20, 20, generator=g)])
    torch.testing.assert_close(clip_x0(x0, "static"), x0.clamp(-1, 1))
    dyn = clip_x0(x0, "dynamic")
    s = torch.quantile(x0.abs().reshape(3, -1), 0.995, dim=1).clamp(min=1.0)[:, None, None, None]
    torch.testing.assert_close(dyn, x0.clamp(-s, s) / s)  # Saharia et al.: clamp to [-s, s], divide by s
    assert dyn.abs().max() <= 1.0 and torch.equal(dyn[2], x0[2])  # inside [-1, 1]: s = 1, unchanged


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_clip_bounds_every_x0_estimate(discrete, sampler):
    """An ε-model whose x̂0 overshoots the data range: with clip='static' every x̂0 a step uses is in
    [-1, 1] (ε̂ recomputed from it); without clipping it is not."""

    def overshoot(x, t):
        return -2.0 * x  # x̂0 = (x + 2σx)/α: far outside [-1, 1]

    for clip, bounded in (("none", False), ("static", True), ("dynamic", True)):
        seen: list[torch.Tensor] = []
        out = sample(overshoot, torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)), discrete,
                     sampler, 10, clip=clip, generator=torch.Generator().manual_seed(1),
                     callback=lambda st, seen=seen: seen.append(st.x0))
        assert torch.isfinite(out).all()
        assert (max(float(x.abs().max()) for x in seen) <= 1.0 + 1e-6) == bounded, (sampler, clip)


def test_ddim_step_uses_the_clipped_estimate(discrete):
    """One DDIM step by hand: x_s = α_s x̂0c + σ_s ε̂c, ε̂c = (x - α_t x̂0c)/σ_t (ADM's ddim_sample)."""
    x = 3.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    timesteps = [500.0, 300.0]
    out = sample(lambda z, t: 0.1 * z, x, discrete, "ddim", 0, timesteps=timesteps, clip="static")
    grid = torch.tensor(timesteps)
    (a_t, a_s), (s_t, s_s) = discrete.alpha(grid).tolist(), discrete.sigma(grid).tolist()
    x0 = ((x - s_t * 0.1 * x) / a_t).clamp(-1, 1)
    torch.testing.assert_close(out, a_s * x0 + s_s * (x - a_t * x0) / s_t)


def _loaded(data_name: str, shape: tuple[int, ...], config: RunConfig | None = None) -> LoadedModel:
    schedule = make_schedule("linear", T=T)
    return LoadedModel(Denoiser(Spy(), schedule), schedule, config, "m", data_name, shape=shape)


def test_clip_default_per_data_kind_and_config():
    digits = _loaded("digits", (1, 8, 8))
    assert sample_settings(digits, "ddim", 10)["clip"] == "static"  # images: ADM's clip_denoised
    assert sample_settings(_loaded("gmm", (2,)), "ddim", 10)["clip"] == "none"  # unbounded data
    cfg = RunConfig()
    cfg.sample.clip, cfg.sample.timestep_spacing, cfg.sample.denoise_to_zero = "dynamic", "trailing", True
    got = sample_settings(_loaded("digits", (1, 8, 8), cfg), "ddim", 10)
    assert (got["clip"], got["timestep_spacing"], got["denoise_to_zero"]) == ("dynamic", "trailing", True)
    explicit = sample_settings(_loaded("digits", (1, 8, 8), cfg), "ddim", 10, clip="none")
    assert explicit["clip"] == "none"  # an explicit option wins
    rec = describe_sampling(_loaded("digits", (1, 8, 8)), "dpm-solver-3", 20)
    assert rec["timestep_spacing"] == "linspace" and rec["orders"] == [3] * 6 + [2]
    assert rec["denoise_to_zero"] is False and rec["clip"] == "static" and rec["integer_timesteps"] is True


def test_cli_help_shows_the_conventions_and_defaults():
    res = CliRunner().invoke(main, ["sample", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for needle in ("--timestep-spacing", "--denoise-to-zero / --no-denoise-to-zero", "--order-plan",
                   "Default: the run's sample.order_plan, else lu", "--clip [auto|none|static|dynamic]",
                   "Default: the run's sample.clip, else auto", "off for the DPM-Solvers"):
        assert needle in text, needle


def test_cli_sample_records_the_conventions(tmp_path):
    out = tmp_path / "s.npz"
    args = ["sample", "gmm", "--num", "16", "--nfe", "8", "--sampler", "dpm-solver-3", "--out", str(out),
            "--threads", "1", "--clip", "dynamic"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(str(np.load(out)["sampling"]))
    assert rec["timestep_spacing"] == "linspace" and rec["integer_timesteps"] is True
    assert rec["orders"] == [3, 3, 2] and rec["denoise_to_zero"] is False and rec["clip"] == "dynamic"


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_zero_snr_v_model_with_nfe_T_visits_several_floored_points(continuous, sampler):
    """DDPM/DDIM with NFE = T on zero-SNR walk t = T-1 (α = 0) and then t = T-2, whose α² is also below
    the 2^-24 floor: only the start is α = 0 exactly (two α = 0 points made β_ts = 0/0 before)."""
    sched = make_schedule("zero-snr", continuous=continuous)
    den = Denoiser(lambda x, c: 0.5 * x, sched, "v")
    x = sample(den, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)), sched, sampler, 1000)
    assert torch.isfinite(x).all()
