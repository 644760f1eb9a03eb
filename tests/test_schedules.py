"""Noise schedules against independent references.

References: closed forms of Appendix C.1 (Eq. A2, A5-A6, A8-A9), central finite differences,
diffusers' DDPMScheduler tables, and the continuous-time limit of the discrete schedules.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from etsdm import SCHEDULE_NAMES, make_schedule
from etsdm.schedules import ALPHA2_FLOOR

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
BETA_MIN, BETA_MAX, S_COSINE = 0.1, 20.0, 0.008
# (name, modified) pairs that exist: Modified-NS only for linear, quadratic, cosine (Appendix D.3.2)
VARIANTS = [(n, False) for n in SCHEDULE_NAMES] + [(n, True) for n in ("linear", "quadratic", "cosine")]


@cache
def sched(name: str, continuous: bool, modified: bool = False, T: int = 1000):
    return make_schedule(name, T=T, continuous=continuous, modified=modified)


def alpha_dd(name: str, T: int = 1000) -> torch.Tensor:
    """Hand-written DDPM ᾱ tables of Ho et al. / Nichol & Dhariwal in float64 (Eq. A3, A4, A7)."""
    b0, b1 = BETA_MIN / T, BETA_MAX / T
    if name == "linear":
        betas = torch.linspace(b0, b1, T, dtype=F64)
    elif name == "quadratic":
        betas = torch.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=F64) ** 2
    else:
        raise ValueError(name)
    return torch.cumprod(1 - betas, 0)


# ----------------------------------------------------------------------------------------------
# Appendix C.1: dα/dτ at τ = 0
# ----------------------------------------------------------------------------------------------
def eq_a9(s: float) -> float:
    """Eq. (A9): dα/dτ|₀ = -π / (2(1+s)) · tan(s/(1+s) · π/2)."""
    return -math.pi / (2 * (1 + s)) * math.tan(s / (1 + s) * math.pi / 2)


@pytest.mark.parametrize(
    "name, modified, expected",
    [
        ("linear", False, -BETA_MIN / 2),  # Eq. (A2) with β(0) = β̄_min (Eq. A5)
        ("quadratic", False, -BETA_MIN / 2),  # Eq. (A2) with β(0) = β̄_min (Eq. A6)
        ("cosine", False, eq_a9(S_COSINE)),  # Eq. (A9)
        ("linear", True, 0.0),  # Modified-NS: β(0) = 0
        ("quadratic", True, 0.0),
        ("cosine", True, 0.0),  # Modified-NS: s = 0 in Eq. (A9)
    ],
)
def test_dalpha_at_zero_continuous_and_discrete(name, modified, expected):
    cont = sched(name, True, modified)
    assert float(cont.dalpha_dt(0.0)) == pytest.approx(expected, abs=1e-15, rel=1e-12)
    # The discrete first slope (α at the first noisy step minus α = 1 of the data) per unit τ = t/T
    # is a one-sided difference quotient of the continuous limit: error O(1/T).
    errs = {}
    for T in (1000, 4000):
        disc = make_schedule(name, T=T, modified=modified)
        slope = (float(disc.alpha(0)) - 1.0) * T
        assert float(disc.dalpha_dt(-1)) * T == pytest.approx(slope, rel=1e-3)  # the table's own slope
        errs[T] = abs(slope - expected)
    assert errs[1000] <= 15.0 / 1000  # C/T with C = 1.5 · max|α''| over the schedules here (≈ 10)
    assert errs[4000] <= 1.1 * errs[1000] / 4 + 1e-12  # at least first order in 1/T


def test_cosine_discrete_slope_error_is_the_taylor_term():
    """For cosine the discrete α_1 is α(1/T) exactly, so slope·T - α'(0) = α''(0)/(2T) + O(1/T²)."""
    half_curv = 0.5 * (math.pi / (2 * (1 + S_COSINE))) ** 2  # |α''(0)|/2 from Eq. (A8)
    for T in (1000, 4000):
        slope = (float(make_schedule("cosine", T=T).alpha(0)) - 1.0) * T
        assert abs(slope - eq_a9(S_COSINE)) * T == pytest.approx(half_curv, rel=0.02)


# ----------------------------------------------------------------------------------------------
# dα/dt closed form vs central finite differences, all 10 (name, continuous) combinations
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_dalpha_dt_matches_finite_differences(name, continuous):
    s = sched(name, continuous)
    if continuous:
        t, h = torch.tensor([0.05, 0.3, 0.7, 0.95], dtype=F64), 1e-6
    else:  # interior of grid segments, where the piecewise log-linear α is smooth
        t, h = torch.tensor([0.3, 10.25, 300.5, 700.75, 900.4], dtype=F64), 1e-4
    fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(s.dalpha_dt(t), fd, rtol=1e-6, atol=1e-12)
    fd_sigma = (s.sigma(t + h) - s.sigma(t - h)) / (2 * h)
    torch.testing.assert_close(s.dsigma_dt(t), fd_sigma, rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Discrete vs continuous at the grid points
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, modified", VARIANTS)
def test_discrete_matches_continuous_at_grid_points(name, modified):
    """Discrete index i vs continuous τ = (i+1)/T.

    Cosine and cosine-shift tables are samples of the continuous α (β capped at 0.999 only at the
    very end), so they agree to rounding. Linear/quadratic (and zero-snr built on linear) differ at
    O(1/T): Π sqrt(1-β_j) = exp(-½Σβ_j - ¼Σβ_j² - ...) vs exp(-½∫β̄), and the Riemann sum Σβ̄(τ_j)/T
    vs the integral. Tolerance: |α_d - α_c| <= C/T with C = 2.5 (the measured constant is 0.8-1.9:
    the log-error grows like (1/T)∫β̄² while α decays, so α·|Δlog α| peaks mid-way). Checking the
    same C at T = 1000 and 4000 shows the error is O(1/T), not O(1) or O(1/sqrt T).
    """
    exact = name in ("cosine", "cosine-shift")
    for T in (1000, 4000):
        disc, cont = make_schedule(name, T=T, modified=modified), sched(name, True, modified)
        i = torch.arange(T, dtype=F64)
        a_d, a_c = disc.alpha(i), cont.alpha((i + 1) / T)
        if exact:
            keep = slice(0, T - 1)  # the last β is capped at 0.999 / both at the α² floor
            torch.testing.assert_close(a_d[keep], a_c[keep], rtol=1e-12, atol=1e-15)
        else:
            err = (a_d - a_c).abs().max().item()
            assert err <= 2.5 / T, (T, err * T)
            assert err > 0.1 / T  # sanity: the O(1/T) difference really is there (not a tautology)


# ----------------------------------------------------------------------------------------------
# Discrete tables vs diffusers
# ----------------------------------------------------------------------------------------------
def _diffusers_abar(**kw) -> torch.Tensor:
    from diffusers import DDPMScheduler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, **kw)
    return sch.alphas_cumprod.to(F64)


@pytest.mark.parametrize(
    "name, beta_schedule", [("linear", "linear"), ("quadratic", "scaled_linear"), ("cosine", "squaredcos_cap_v2")]
)
def test_tables_equal_diffusers(name, beta_schedule):
    ours, ref = sched(name, False).alphas_cumprod(), _diffusers_abar(beta_schedule=beta_schedule)
    # diffusers builds its tables in float32 (cumprod of 1000 factors: ~1e-6 relative). The last
    # cosine entry is 0.001·ᾱ_998 ≈ 2.4e-9 there and our α² floor 2^-24 here.
    torch.testing.assert_close(ours[:-1], ref[:-1], rtol=2e-6, atol=0)
    if name == "cosine":
        assert float(ours[-1]) == pytest.approx(ALPHA2_FLOOR, rel=1e-12) and float(ref[-1]) < ALPHA2_FLOOR
    else:
        assert float(ours[-1]) == pytest.approx(float(ref[-1]), rel=2e-6)
    if name != "cosine":  # our hand-written float64 DDPM tables (Eq. A3/A4), 1e-12
        torch.testing.assert_close(ours, alpha_dd(name), rtol=1e-12, atol=0)


def test_zero_snr_equals_diffusers_rescale():
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    ours = sched("zero-snr", False).alphas_cumprod()
    # (a) diffusers' own function in float64 on float64 linear betas: identical except our α²
    # floor 2^-24 ≈ 6e-8, which the last 4 entries (ᾱ = 0, 4e-9, 2e-8, 4e-8 there) sit on
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    ref64 = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    assert float(ref64[-1]) == pytest.approx(0.0, abs=1e-25)
    torch.testing.assert_close(ours, ref64.clamp(min=ALPHA2_FLOOR), rtol=1e-9, atol=0)
    assert int((ref64 < ALPHA2_FLOOR).sum()) == 4
    # (b) the scheduler itself (float32: shifting sqrt(ᾱ) by its last value loses relative
    # precision where ᾱ is tiny, so compare sqrt(ᾱ) with an absolute tolerance)
    ref32 = _diffusers_abar(beta_schedule="linear", rescale_betas_zero_snr=True)
    torch.testing.assert_close(ours.sqrt(), ref32.clamp(min=ALPHA2_FLOOR).sqrt(), rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------------------------
# Modified-NS (Appendix D.3.2) and zero terminal SNR
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "quadratic"])
def test_modified_ns_terminal_snr_and_early_snr(name):
    """β(0) = 0 for both; only quadratic's β_T is "slightly increased" so that its SNR at t = T is the
    original's (Appendix D.3.2); linear keeps β_T = 0.02 (its SNR at T rises by e^{β̄min/2})."""
    cont, cont_mod = sched(name, True), sched(name, True, True)
    # closed forms of -½∫₀¹β̄: -(β̄min+β̄max)/4 (linear), -(a² + ab + b²/3)/2 with a = sqrt(β̄min),
    # b = sqrt(β̄max)-a (quadratic); Modified-NS linear: -β̄max/4
    a, b = math.sqrt(BETA_MIN), math.sqrt(BETA_MAX) - math.sqrt(BETA_MIN)
    log_alpha_1 = -(BETA_MIN + BETA_MAX) / 4 if name == "linear" else -(a * a + a * b + b * b / 3) / 2
    log_alpha_1_mod = -BETA_MAX / 4 if name == "linear" else log_alpha_1
    assert float(cont.log_alpha(1.0)) == pytest.approx(log_alpha_1, rel=1e-12)
    assert float(cont_mod.log_alpha(1.0)) == pytest.approx(log_alpha_1_mod, rel=1e-12)
    # discrete: the same up to the O(1/T) Riemann-sum difference of their τ grids
    disc, disc_mod = sched(name, False), sched(name, False, True)
    shift = 2 * (log_alpha_1_mod - log_alpha_1)  # of log ᾱ_T
    assert abs(float(disc_mod.log_alpha(999) - disc.log_alpha(999)) * 2 - shift) < 0.05
    a2 = disc_mod.alpha(torch.tensor([998.0, 999.0], dtype=F64)) ** 2  # the last β of the table
    beta_last, rel = (0.02, 1e-12) if name == "linear" else (0.0215, 0.01)  # quadratic: β̄_max 21.5 / T
    assert float(1 - a2[1] / a2[0]) == pytest.approx(beta_last, rel=rel)
    # Fig. A8: the ratio SNR_mod / SNR > 1 near t = 0 (first 10% of the steps)
    early = ((disc, disc_mod, torch.arange(100, dtype=F64)), (cont, cont_mod, torch.linspace(1e-3, 0.1, 50)))
    for s, s_mod, t in early:
        ratio = (s_mod.log_snr(t) - s.log_snr(t)).exp()
        assert bool((ratio > 1).all()), ratio.min()
        assert float(ratio[0]) > 3


def test_modified_cosine_is_s_zero():
    for c in (False, True):
        torch.testing.assert_close(
            sched("cosine", c, True).alphas_cumprod(), make_schedule("cosine", continuous=c, s=0.0).alphas_cumprod()
        )
        t = torch.arange(100, dtype=F64) if not c else torch.linspace(1e-3, 0.1, 50, dtype=F64)
        assert bool((sched("cosine", c, True).log_snr(t) > sched("cosine", c).log_snr(t)).all())


@pytest.mark.parametrize("continuous", [False, True])
def test_zero_snr_terminal_snr_at_floor(continuous):
    s = sched("zero-snr", continuous)
    t_end = s.t_max
    assert float(s.alpha(t_end) ** 2) == pytest.approx(ALPHA2_FLOOR, rel=1e-12)
    assert float(s.snr(t_end)) == pytest.approx(ALPHA2_FLOOR / (1 - ALPHA2_FLOOR), rel=1e-9)
    assert math.isfinite(float(s.lambda_(t_end)))


# ----------------------------------------------------------------------------------------------
# λ and its inverse
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_t_from_lambda_inverts_lambda(name, continuous):
    s = sched(name, continuous)
    if continuous:
        t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.9], dtype=F64)
    else:
        t = torch.tensor([-0.5, 0.0, 3.7, 100.0, 500.5, 900.0], dtype=F64)
    torch.testing.assert_close(s.t_from_lambda(s.lambda_(t)), t, rtol=0, atol=1e-9)
    # and λ = log(α/σ) from α and σ directly
    torch.testing.assert_close(s.lambda_(t), torch.log(s.alpha(t) / s.sigma(t)), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Properties (hypothesis) over every schedule variant, discrete and continuous
# ----------------------------------------------------------------------------------------------
variant = st.sampled_from([(n, c, m) for n, m in VARIANTS for c in (False, True)])
unit = st.floats(0.0, 1.0, allow_nan=False)


def _time(s, u: float) -> float:
    return s.t_data + u * (s.t_max - s.t_data)


@given(variant, unit, unit)
def test_property_range_and_monotone(v, u1, u2):
    s = sched(*v)
    t = torch.tensor(sorted([_time(s, u1), _time(s, u2)]), dtype=F64)
    alpha, sigma, lam = s.alpha(t), s.sigma(t), s.lambda_(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(2, dtype=F64), rtol=0, atol=1e-12)
    assert bool(((alpha > 0) & (alpha <= 1)).all())
    assert alpha[0] >= alpha[1] and sigma[0] <= sigma[1]  # α decreasing, σ increasing
    assert lam[0] >= lam[1]  # λ decreasing


@given(variant, st.floats(1e-4, 1.0, allow_nan=False))
def test_property_t_from_lambda(v, u):
    s = sched(*v)
    t = torch.tensor(_time(s, u), dtype=F64)
    if float(s.alpha(t)) ** 2 <= 1.0001 * ALPHA2_FLOOR:  # λ is flat on the floored tail: no inverse
        return
    t_back = s.t_from_lambda(s.lambda_(t))
    assert abs(float(t_back - t)) <= 1e-8 * (s.t_max - s.t_data)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "sigmoid"}, "schedule"),
        ({"name": "cosine-shift", "modified": True}, "modified"),
        ({"name": "zero-snr", "modified": True}, "modified"),
        ({"name": "linear", "T": 1}, "T must"),
        ({"name": "linear", "T": 10.5}, "T must"),
        ({"name": "linear", "beta_min": 30.0}, "beta_min"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        make_schedule(name, **kwargs)
