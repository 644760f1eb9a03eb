"""K(t, t′) of Eq. (8) against functions with a known Lipschitz constant in t, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from etsdm import Denoiser, GaussianMixture, TimestepSharing, make_schedule
from etsdm.analysis import lipschitz_curve, lipschitz_times

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is fastest


SCHED = make_schedule("linear", T=1000)


def _unit(d: int) -> torch.Tensor:
    u = torch.arange(1.0, d + 1, dtype=torch.float64)
    return u / u.norm()


def _x0(n: int = 16, d: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("a", [0.5, 3.0])
@pytest.mark.parametrize("dt", [1.0, 7.0])
def test_linear_in_t_gives_K_equal_a(a, dt):
    u = _unit(3)

    def eps(x, t):  # ε(x, t) = a t u: ‖ε(x, t + Δt) − ε(x, t)‖ / Δt = a for every x, t
        return a * t[:, None] * u + 0 * x

    times = lipschitz_times(SCHED, t_end=200, dt=dt, stride=10)
    curve = lipschitz_curve(eps, _x0(), SCHED, times, dt=dt, batch_size=10)
    torch.testing.assert_close(curve.K, torch.full_like(curve.K, a), rtol=1e-12, atol=0)
    assert float(curve.K_sem.max()) < 1e-7  # sum-of-squares variance: float64 rounding only


def test_continuous_time_and_default_dt():
    """Default Δt = 1/T; scale "time": K per unit of continuous time; default scale "step": per
    discrete-equivalent step, T times smaller (issue 7 item 6)."""
    sched = make_schedule("cosine", continuous=True)

    def eps(x, t):
        return 2.0 * torch.sin(t)[:, None] * _unit(3) + 0 * x  # K = 2 |sin(t+Δt) − sin t| / Δt

    times = lipschitz_times(sched, stride=100)
    per_time = lipschitz_curve(eps, _x0(), sched, times, scale="time")
    dt = 1e-3
    expected = 2 * (torch.sin(per_time.t + dt) - torch.sin(per_time.t)).abs() / dt
    assert per_time.dt == dt and per_time.scale == "time" and "continuous time" in per_time.unit
    torch.testing.assert_close(per_time.K, expected, rtol=1e-9, atol=1e-12)
    per_step = lipschitz_curve(eps, _x0(), sched, times)
    assert per_step.scale == "step" and per_step.steps_per_unit == 1000 and "discrete-equivalent" in per_step.unit
    torch.testing.assert_close(per_step.K, expected / 1000, rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="scale"):
        lipschitz_curve(eps, _x0(), sched, times, scale="second")


def test_continuous_and_discrete_K_of_the_same_model_agree_on_the_default_scale():
    """The exact ε* of the ring on the discrete and the continuous linear schedule: discrete step
    i is continuous t = (i + 1)/T, and per discrete-equivalent step the two curves agree (they
    differed by T = 1000 when continuous K was per unit of time; issue 7 item 6)."""
    from etsdm.analysis.specs import analytic_model

    disc, cont = analytic_model("gmm"), analytic_model("gmm:continuous")
    x0 = disc.dataset("train", 64)
    steps = torch.tensor([0.0, 5.0, 50.0, 200.0, 500.0], dtype=torch.float64)
    k_disc, k_cont = (
        lipschitz_curve(m, x0, m.schedule, t, generator=torch.Generator().manual_seed(0)).K
        for m, t in ((disc, steps), (cont, (steps + 1) / 1000))
    )
    torch.testing.assert_close(k_cont, k_disc, rtol=0.05, atol=0)


class _TinyNet(torch.nn.Module):
    """A small MLP net(x, c) whose output depends smoothly on x and the condition c."""

    def __init__(self, d: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(d + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, d))

    def forward(self, x, c):
        return self.body(torch.cat([x.float(), c[:, None].float() / 1000], 1))


def test_etsdm_v_model_gives_exactly_zero_inside_subintervals_by_default():
    """A v-prediction network under E-TSDM sharing: K of the network's own output (the default)
    is exactly 0 inside each shared sub-interval, as for ε-models; K of the converted ε = σ x + α v
    is not (dσ/dt · x enters it; issue 7 item 4)."""
    den = Denoiser(_TinyNet(), SCHED, "v", TimestepSharing(100, 5, T=1000))
    x0 = _x0(8, 4).float()
    times = lipschitz_times(SCHED, t_end=110)
    curve = lipschitz_curve(den, x0, SCHED, times, batch_size=64, generator=torch.Generator().manual_seed(0))
    jumps = [19, 39, 59, 79, 99]
    inside = [t for t in range(100) if t not in jumps]
    assert bool((curve.K[inside] == 0).all()) and bool((curve.K[jumps] > 0).all()) and bool((curve.K[100:] > 0).all())
    assert curve.output == "v" and curve.network_output
    for output in ("eps", "x0"):
        conv = lipschitz_curve(den, x0, SCHED, times, output=output, batch_size=64)
        assert conv.output == output and not conv.network_output
        assert bool((conv.K[inside] > 1e-4).all())
    assert lipschitz_curve(den, x0, SCHED, times, output="v", batch_size=64).network_output


def test_converted_outputs_of_a_plain_callable_match_the_denoiser():
    """A plain callable is an ε-network: its "v" and "x0" conversions equal the Denoiser's."""
    gmm = GaussianMixture.ring()
    x0 = gmm.sample(16, torch.Generator().manual_seed(0))
    times = torch.tensor([0.0, 30.0, 400.0], dtype=torch.float64)
    for output in ("v", "x0"):
        k_fn, k_den = (
            lipschitz_curve(m, x0, SCHED, times, output=output, generator=torch.Generator().manual_seed(1)).K
            for m in (gmm.eps_model(SCHED), Denoiser(gmm.eps_model(SCHED), SCHED, "eps"))
        )
        torch.testing.assert_close(k_fn, k_den, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="output must be one of"):
        lipschitz_curve(gmm.eps_model(SCHED), x0, SCHED, times, output="score")


def test_summary_mean_and_max_off_boundaries():
    """The summary beside "K max": mean over [t_start, t̃), the max (a boundary jump for E-TSDM)
    and the max over the t that cross no sub-interval boundary (issue 13)."""
    from etsdm.analysis.lipschitz import boundary_jumps, curve_summary

    sharing = TimestepSharing(100, 5, T=1000)
    t = torch.arange(0.0, 121.0, dtype=torch.float64)
    k = torch.where(t < 100, 0.01 * (100 - t), 0.5 / (t + 1))
    k[[19, 39, 59, 79, 99]] = 2.5  # jumps
    summary = curve_summary(t, k, 1.0, 100, sharing.boundaries)
    assert summary["window"] == [0.0, 100.0] and summary["mean"] == pytest.approx(float(k[:100].mean()))
    assert summary["max"] == 2.5 and summary["t_at_max"] == 19 and summary["max_is_boundary_jump"]
    assert summary["max_off_boundaries"] == pytest.approx(1.0) and summary["t_at_max_off_boundaries"] == 0
    plain = curve_summary(t, k, 1.0, 100, [])
    assert "max_off_boundaries" not in plain and not plain["max_is_boundary_jump"]
    assert boundary_jumps(t, 1.0, sharing.boundaries).nonzero().flatten().tolist() == [19, 39, 59, 79, 99]
    cont = TimestepSharing(0.1, 5, T=None).boundaries
    tc = torch.tensor([0.0189, 0.0199, 0.02, 0.0999, 0.1], dtype=torch.float64)
    assert boundary_jumps(tc, 1e-3, cont).tolist() == [False, True, False, True, False]


def test_piecewise_constant_is_zero_inside_pieces_through_the_denoiser():
    """A net that returns its condition: through E-TSDM's map K is 0 inside each sub-interval and
    the jump at each boundary (20 = Δ of the sub-intervals, 80 -> 100 at t̃)."""
    u = _unit(4)
    den = Denoiser(lambda x, c: c.double()[:, None] * u + 0 * x, SCHED, "eps", TimestepSharing(100, 5, T=1000))
    curve = lipschitz_curve(den, _x0(8, 4), SCHED, lipschitz_times(SCHED, t_end=120), batch_size=64)
    k = curve.K
    jumps = {19: 20.0, 39: 20.0, 59: 20.0, 79: 20.0, 99: 20.0}
    for t in range(121):
        want = jumps.get(t, 0.0 if t < 100 else 1.0)
        assert float(k[t]) == pytest.approx(want, abs=1e-9), t


def test_cost_is_exactly_two_evaluations_per_sample_and_time_and_same_x():
    """2 N M example-evaluations in ⌈2NM/B⌉ calls, and the t- and t′-halves see the same x_t."""
    calls = []

    def eps(x, t):
        k = x.shape[0] // 2
        assert torch.equal(x[:k], x[k:])
        torch.testing.assert_close(t[k:] - t[:k], torch.full((k,), 1.0, dtype=torch.float64))
        calls.append(x.shape[0])
        return x * t[:, None]

    n, times, batch = 10, lipschitz_times(SCHED, t_end=36), 64
    curve = lipschitz_curve(eps, _x0(n), SCHED, times, batch_size=batch)
    m = len(times)
    assert sum(calls) == curve.evaluations == 2 * n * m
    assert len(calls) == curve.calls == math.ceil(2 * n * m / batch)
    assert all(c == batch for c in calls[:-1])


def test_forward_process_draw_gives_closed_form_for_standard_normal_data():
    """Data N(0, I): q_t = N(0, I) for every t and ε*(x, t) = σ_t x (Eq. 7), so
    K = |σ_{t′} − σ_t| / Δt · E‖x‖ with E‖x‖ = √2 Γ((D+1)/2) / Γ(D/2)."""
    d, n = 6, 4000
    gmm = GaussianMixture(torch.zeros(1, d), 1.0)
    x0 = gmm.sample(n, torch.Generator().manual_seed(1))
    times = torch.tensor([0.0, 5.0, 50.0, 400.0], dtype=torch.float64)
    curve = lipschitz_curve(gmm.eps_model(SCHED), x0, SCHED, times, generator=torch.Generator().manual_seed(2))
    e_norm = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    expected = (SCHED.sigma(times + 1) - SCHED.sigma(times)).abs() * e_norm
    torch.testing.assert_close(curve.K, expected, rtol=0.03, atol=0)


def test_exact_etsdm_optimum_zero_inside_and_boundary_jump_closed_form():
    """For N(0, I) data q_τ(x) does not depend on τ, so the E-TSDM optimum is mean_τ σ_τ · x over the
    sub-interval (both weightings); K is 0 inside and |mean σ over [20,40) − mean over [0,20)| E‖x‖
    at t = 19."""
    d = 4
    gmm = GaussianMixture(torch.zeros(1, d), 1.0)
    x0 = gmm.sample(1000, torch.Generator().manual_seed(3))
    sharing = TimestepSharing(100, 5, T=1000)
    times = torch.tensor([0.0, 10.0, 19.0, 25.0], dtype=torch.float64)
    e_norm = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    grid = torch.arange(40, dtype=torch.float64)
    jump = float((SCHED.sigma(grid[20:]).mean() - SCHED.sigma(grid[:20]).mean()).abs()) * e_norm
    for weighting in ("posterior", "uniform"):
        model = gmm.eps_model(SCHED, sharing, weighting)
        k = lipschitz_curve(model, x0, SCHED, times, generator=torch.Generator().manual_seed(4)).K
        assert float(k[0]) == 0 and float(k[1]) == 0 and float(k[3]) == 0
        assert float(k[2]) == pytest.approx(jump, rel=0.03)


def test_theorem_3_1_exact_eps_grows_like_inverse_sigma_near_zero():
    """Continuous linear schedule on the ring mixture: K*(t) of the exact ε* grows without bound as
    t -> 0 (Theorem 3.1); Modified-NS (dα/dt|0 = 0) keeps it bounded."""
    gmm = GaussianMixture.ring()
    x0 = gmm.sample(400, torch.Generator().manual_seed(5))
    times = torch.tensor([1e-5, 1e-4, 1e-3, 1e-2], dtype=torch.float64)
    out = {}
    for modified in (False, True):
        sched = make_schedule("linear", continuous=True, modified=modified)
        out[modified] = lipschitz_curve(gmm.eps_model(sched), x0, sched, times, dt=1e-7).K
    k = out[False]
    assert bool((k[:-1] > 2 * k[1:]).all())  # at least doubling per decade towards 0
    assert float(out[True][0]) < 1.5 * float(out[True][2])  # flat near 0: bounded
    assert float(out[True][0]) < 0.1 * float(k[0])


def test_bad_ranges_raise():
    with pytest.raises(ValueError, match="whole number"):
        lipschitz_times(SCHED, dt=0.5)
    with pytest.raises(ValueError, match="t_max - dt"):
        lipschitz_times(SCHED, t_end=999)
    with pytest.raises(ValueError, match="dt must be > 0"):
        lipschitz_times(SCHED, dt=-1)


def test_log_spaced_times_and_continuous_analytic_specs():
    from etsdm.analysis.specs import analytic_model

    disc = lipschitz_times(SCHED, t_start=1, t_end=998, log_points=50)
    assert bool((disc[1:] > disc[:-1]).all()) and bool((disc == disc.round()).all()) and disc[-1] == 998
    base, shared = analytic_model("gmm:continuous"), analytic_model("gmm:etsdm:continuous")
    sched = base.schedule
    assert sched.continuous
    times = lipschitz_times(sched, t_start=1e-4, t_end=0.5, dt=1e-6, log_points=6)
    x0 = base.dataset("train", 64)
    k_base, k_shared = (
        lipschitz_curve(m, x0, sched, times, dt=1e-6, generator=torch.Generator().manual_seed(0)).K
        for m in (base, shared)
    )
    below = times < 0.1 - 1e-6  # inside shared sub-intervals (none of these t straddles a boundary)
    assert bool((k_shared[below] == 0).all()) and bool((k_base[below] > 0).all())
    torch.testing.assert_close(k_shared[~below], k_base[~below])
    with pytest.raises(ValueError, match="log spacing"):
        lipschitz_times(sched, t_start=0.0, log_points=5)
