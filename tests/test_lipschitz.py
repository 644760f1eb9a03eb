"""K(t, t′) of Eq. (8) against functions with a known Lipschitz constant in t, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from cond_nets import cond_net as _cond_net
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


# ----------------------------------------------------------------------------------------------
# The curve's values frozen before its per-curve precomputation (issue 11): α_t, σ_t, the
# conditions of t and t′ and the conversion coefficients made once per curve must give the
# values of the per-call loop, to float64 round-off, for every process, prediction, condition
# map, output, cond dict, plain callable, fresh noise, odd batch size and scale.
# ----------------------------------------------------------------------------------------------
FROZEN_PROCESSES = {
    "linear": (lambda: make_schedule("linear", T=1000), "eps"),
    "cosine": (lambda: make_schedule("cosine", continuous=True), "v"),
    "edm": (lambda: make_schedule("edm"), "edm"),
    "flow": (lambda: make_schedule("flow"), "flow"),
}


def _frozen_curve(process, condition, output, callable_=False, with_cond=True, batch_size=4, **kw):
    """The curve of one frozen case: N = 3 float64 samples, 5 log-spaced times, B = 4 (8 calls,
    pairs of different times in one call, the last one partial)."""
    from etsdm.conditioning import Identity, process_sharing

    make, prediction = FROZEN_PROCESSES[process]
    sched = make()
    den = Denoiser(_cond_net, sched, prediction, Identity() if condition == "identity" else process_sharing(sched))
    model = (lambda x, t, **cond: den(x, t, **cond)) if callable_ else den  # a plain ε-callable
    times = lipschitz_times(sched, t_start=None if sched.continuous else 1.0, log_points=5)
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cond = {"labels": torch.tensor([2, 0, 1]),
            "lowres": torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)}
    return lipschitz_curve(model, x0, sched, times, output=output, batch_size=batch_size,
                           cond=cond if with_cond else None, generator=torch.Generator().manual_seed(3), **kw)


FROZEN_EXTRA = {
    "linear-etsdm-callable-net": dict(process="linear", condition="etsdm", output="net", callable_=True),
    "linear-etsdm-callable-v": dict(process="linear", condition="etsdm", output="v", callable_=True),
    "cosine-identity-callable-x0": dict(process="cosine", condition="identity", output="x0", callable_=True),
    "linear-etsdm-net-nocond": dict(process="linear", condition="etsdm", output="net", with_cond=False),
    "edm-etsdm-net-fresh-noise-b5": dict(process="edm", condition="etsdm", output="net", shared_noise=False,
                                         batch_size=5),
    "flow-identity-eps-fresh-noise-b7": dict(process="flow", condition="identity", output="eps",
                                             shared_noise=False, batch_size=7),
    "cosine-etsdm-x0-time-b64": dict(process="cosine", condition="etsdm", output="x0", scale="time",
                                     batch_size=64),
}


def _frozen_case(name: str) -> dict:
    if name in FROZEN_EXTRA:
        return FROZEN_EXTRA[name]
    process, condition, output = name.split("-")
    return dict(process=process, condition=condition, output=output)


# K and K_sem of each case, computed by the per-call loop (commit b033fc6)
FROZEN: dict[str, tuple[list[float], list[float]]] = {
    "linear-identity-net": (
        [0.012311693706088415, 0.2646003255216949, 0.8399501845636186, 0.7719395899751672, 0.5396625077022823],
        [0.002690278751684588, 0.005383930971195031, 0.003782378832899412, 0.0006940163554995772,
         0.0002622717721795622]),
    "linear-identity-eps": (
        [0.012311693706088415, 0.2646003255216949, 0.8399501845636186, 0.7719395899751672, 0.5396625077022823],
        [0.002690278751684588, 0.005383930971195031, 0.003782378832899412, 0.0006940163554995772,
         0.0002622717721795622]),
    "linear-identity-v": (
        [0.013450444409484072, 0.2640699303838525, 0.8456714054750899, 0.9167802079472088, 81.80476571331745],
        [0.004200647199087082, 0.006521659489323728, 0.004914138946941606, 0.002842369978603763,
         0.5483338191483242]),
    "linear-identity-x0": (
        [0.0021180959212357005, 0.010854685007074288, 0.10376269046813454, 0.49506293020454945, 81.80300021391741],
        [0.00039844251661250114, 0.0008458347659543732, 0.0004484116677038126, 0.0015156966580613079,
         0.5483147388760591]),
    "linear-etsdm-net": (
        [0.0, 0.0, 0.0, 0.7719395899751672, 0.5396625077022823],
        [0.0, 0.0, 0.0, 0.0006940163554995772, 0.0002622717721795622]),
    "linear-etsdm-eps": (
        [0.0, 0.0, 0.0, 0.7719395899751672, 0.5396625077022823],
        [0.0, 0.0, 0.0, 0.0006940163554995772, 0.0002622717721795622]),
    "linear-etsdm-v": (
        [0.002484824383150451, 0.0020273320836537976, 0.0018649627374138914, 0.9167802079472088, 81.80476571331745],
        [0.0002785829658533297, 0.0002301171442960071, 0.0001890908096632346, 0.002842369978603763,
         0.5483338191483242]),
    "linear-etsdm-x0": (
        [0.0022034893743274175, 0.0017916519340258794, 0.0016843362110237705, 0.49506293020454945,
         81.80300021391741],
        [0.0003726113086984135, 0.0003191226102578349, 0.0006508294431684841, 0.0015156966580613079,
         0.5483147388760591]),
    "cosine-identity-net": (
        [0.001357889327825325, 0.0013576083204443314, 0.0013510891490238408, 0.0011604867787646004,
         0.0012763599788575487],
        [1.4008321644823749e-06, 1.3323292166493342e-06, 1.0612468963999414e-06, 1.112428498098507e-06,
         2.828839255278725e-06]),
    "cosine-identity-eps": (
        [0.002309393413907445, 0.0018765247124261995, 0.0017277377931080044, 0.0012262323968317537,
         0.0009353947162720116],
        [0.0008744641325724233, 0.0006328799332583755, 0.0005487009209761797, 0.0004882958152769135,
         0.00020151262820330073]),
    "cosine-identity-v": (
        [0.001357889327825325, 0.0013576083204443314, 0.0013510891490238408, 0.0011604867787646004,
         0.0012763599788575487],
        [1.4008321644823749e-06, 1.3323292166493342e-06, 1.0612468963999414e-06, 1.112428498098507e-06,
         2.828839255278725e-06]),
    "cosine-identity-x0": (
        [0.0016002364477992203, 0.0010593530148376028, 0.0009796992281505355, 0.0013954712767019599,
         0.0018008675049525195],
        [0.0002653565326969423, 0.0001863537054617464, 0.0002185991340118491, 0.0005159847305117752,
         0.000625778278155196]),
    "cosine-etsdm-net": (
        [0.0, 0.0, 0.0, 0.0011604867787646004, 0.0012763599788575487],
        [0.0, 0.0, 0.0, 1.112428498098507e-06, 2.828839255278725e-06]),
    "cosine-etsdm-eps": (
        [0.001764990700014449, 0.0011353891585975777, 0.000929882412164469, 0.0012262323968317537,
         0.0009353947162720116],
        [0.00019702569716735057, 0.00012748144116874624, 0.00010702966759993953, 0.0004882958152769135,
         0.00020151262820330073]),
    "cosine-etsdm-v": (
        [0.0, 0.0, 0.0, 0.0011604867787646004, 0.0012763599788575487],
        [0.0, 0.0, 0.0, 1.112428498098507e-06, 2.828839255278725e-06]),
    "cosine-etsdm-x0": (
        [0.001595760343110454, 0.0010485123709566722, 0.0009497077379374913, 0.0013954712767019599,
         0.0018008675049525195],
        [0.0002608352859611449, 0.00017487615563384725, 0.00017961117178618338, 0.0005159847305117752,
         0.000625778278155196]),
    "edm-identity-net": (
        [0.004003184729214556, 0.010306154921214844, 0.0006311287812609108, 9.175831193982168e-05,
         6.834178633413188e-06],
        [0.00010637862291700998, 5.672709272792697e-05, 0.000368126117358206, 1.2080560029408248e-05,
         2.199075047289226e-06]),
    "edm-identity-eps": (
        [0.005143935515501911, 0.011277551770414762, 0.0014494755156236746, 0.00014630363378464328,
         1.1631635247790615e-05],
        [0.0016168679338160854, 0.0015308104489578033, 0.0006058271937347553, 4.131533182932982e-05,
         2.8070462559856945e-06]),
    "edm-identity-v": (
        [0.004851825357068376, 0.01102450995644015, 0.0010120675119345216, 0.0003058244245205473,
         0.0002295761764390485],
        [0.0012392903176443296, 0.0011440122767292441, 0.0004659721827255701, 7.02158087871712e-05,
         6.833957040478068e-05]),
    "edm-identity-x0": (
        [0.0010354081835266106, 0.00072653854473686, 0.0006345653050486086, 5.984461553761232e-05,
         3.476754413167187e-06],
        [0.0002943128822143022, 0.0002557051792832981, 0.00015896407769932494, 9.498943186373812e-06,
         1.1036173223424898e-06]),
    "edm-etsdm-net": (
        [6.393939584705603e-06, 7.37840192422459e-05, 0.0006311287812609108, 9.175831193982168e-05,
         6.834178633413188e-06],
        [1.0515649850476644e-06, 1.1824254580191916e-05, 0.000368126117358206, 1.2080560029408248e-05,
         2.199075047289226e-06]),
    "edm-etsdm-eps": (
        [0.0024435146913750878, 0.002607427837966214, 0.0014494755156236746, 0.00014630363378464328,
         1.1631635247790615e-05],
        [0.00027392689517127843, 0.0002952247087763241, 0.0006058271937347553, 4.131533182932982e-05,
         2.8070462559856945e-06]),
    "edm-etsdm-v": (
        [0.001831632086378119, 0.0019467134626967176, 0.0010120675119345216, 0.0003058244245205473,
         0.0002295761764390485],
        [0.00020481630898957335, 0.0002196245781954546, 0.0004659721827255701, 7.02158087871712e-05,
         6.833957040478068e-05]),
    "edm-etsdm-x0": (
        [0.0010401794322136089, 0.0007953424116019988, 0.0006345653050486086, 5.984461553761232e-05,
         3.476754413167187e-06],
        [0.00030080769839566036, 0.00014116883979267133, 0.00015896407769932494, 9.498943186373812e-06,
         1.1036173223424898e-06]),
    "flow-identity-net": (
        [0.0013579280731145008, 0.001357730743525437, 0.0013515980526181178, 0.00116296626090393,
         0.001276345714780449],
        [1.4360666195454854e-06, 1.406526865344817e-06, 1.2381663767625053e-06, 3.73745435123613e-07,
         2.8284894162406457e-06]),
    "flow-identity-eps": (
        [0.0011959033421526618, 0.001184680897620187, 0.0011173632185686852, 0.0006792185451387299,
         0.0007660196616305773],
        [0.0003083806060016365, 0.0003084204570210317, 0.0003083269883592106, 0.0002744381092996343,
         0.00016203764775840488]),
    "flow-identity-v": (
        [0.0020765783776984866, 0.0020640123904545602, 0.0019950478720452236, 0.0016564133237777345,
         0.0009941545783782532],
        [0.0005561712780934824, 0.0005489516428327453, 0.000511485400129865, 0.0004218551050727799,
         5.1372772162277134e-05]),
    "flow-identity-x0": (
        [0.0005402107513790181, 0.0005424940335543213, 0.0005561561564006785, 0.0006333199005960178,
         0.0014434813745614755],
        [8.844931911849748e-05, 9.292324915904301e-05, 0.0001226671127050561, 0.00031358252334860384,
         0.0004079850697254658]),
    "flow-etsdm-net": (
        [0.0, 0.0, 0.0, 0.0, 0.001276345714780449],
        [0.0, 0.0, 0.0, 0.0, 2.8284894162406457e-06]),
    "flow-etsdm-eps": (
        [0.0005391108097820501, 0.0005379783460318948, 0.0005318666015994233, 0.0005597650392116836,
         0.0007660196616305773],
        [8.734171199589994e-05, 8.818177530919868e-05, 9.295554944928759e-05, 0.00018402968847740732,
         0.00016203764775840488]),
    "flow-etsdm-v": (
        [0.002286764700538361, 0.0022709486635448368, 0.002184233902662431, 0.0018241120933616978,
         0.0009941545783782532],
        [0.00028688246136657284, 0.0002880076779624911, 0.00029459687285394146, 0.0004040505350015784,
         5.1372772162277134e-05]),
    "flow-etsdm-x0": (
        [0.0005391108097820035, 0.0005379783460318431, 0.0005318666015993882, 0.0005597650392116202,
         0.0014434813745614755],
        [8.7341711995916e-05, 8.818177530917122e-05, 9.295554944918836e-05, 0.00018402968847737396,
         0.0004079850697254658]),
    "linear-etsdm-callable-net": (
        [0.0, 0.0, 0.0, 0.7719395899751672, 0.5396625077022823],
        [0.0, 0.0, 0.0, 0.0006940163554995772, 0.0002622717721795622]),
    "linear-etsdm-callable-v": (
        [0.002484824383150451, 0.0020273320836537976, 0.0018649627374138914, 0.9167802079472088, 81.80476571331745],
        [0.0002785829658533297, 0.0002301171442960071, 0.0001890908096632346, 0.002842369978603763,
         0.5483338191483242]),
    "cosine-identity-callable-x0": (
        [0.0016002364477991924, 0.0010593530148375833, 0.000979699228150466, 0.0013954712767020499,
         0.0018008675048417336],
        [0.0002653565326969435, 0.00018635370546180773, 0.00021859913401180915, 0.000515984730511753,
         0.0006257782780669699]),
    "linear-etsdm-net-nocond": (
        [0.0, 0.0, 0.0, 0.771140554790176, 0.5396088541210294],
        [0.0, 0.0, 0.0, 0.0004958368840626669, 0.00025034612601390296]),
    "edm-etsdm-net-fresh-noise-b5": (
        [6.393939584705603e-06, 7.216396378601822e-05, 0.00029145512242081164, 9.628199442697763e-05,
         6.018538650601727e-06],
        [1.0515649850476644e-06, 1.3034970516745075e-05, 0.00018086374803330426, 1.179493139674823e-05,
         7.444204282994054e-07]),
    "flow-identity-eps-fresh-noise-b7": (
        [0.0011959033421526618, 0.0011814356070810352, 0.0010987310399028737, 0.0006485627575886507,
         0.00087358122769553],
        [0.0003083806060016365, 0.0003058813202796502, 0.00028796019213660884, 0.00017965045357761186,
         0.0002444288049494277]),
    "cosine-etsdm-x0-time-b64": (
        [1.595760343110454, 1.0485123709566722, 0.9497077379374913, 1.39547127670196, 1.8008675049525198],
        [0.2608352859611448, 0.17487615563384726, 0.17961117178618377, 0.515984730511775, 0.6257782781551956]),
}


@pytest.mark.parametrize("name", list(FROZEN))
def test_curve_values_frozen_before_the_per_curve_precomputation(name):
    """K and its standard error equal the per-call loop's (frozen values), to float64 round-off;
    an exact 0 (E-TSDM's shared sub-intervals, output "net") stays exactly 0. Round-off of f (~1e-16 |f|)
    reaches K = ‖Δf‖ / Δt amplified by |f| / |Δf|, up to ~1e5 here (x0 as α -> 0, v at EDM's σ = 80):
    hence rtol 1e-9, still 1e-6 of the smallest change a wrong time, coefficient or row would make."""
    curve = _frozen_curve(**_frozen_case(name))
    want_k, want_sem = (torch.tensor(v, dtype=torch.float64) for v in FROZEN[name])
    torch.testing.assert_close(curve.K, want_k, rtol=1e-9, atol=0)
    torch.testing.assert_close(curve.K_sem, want_sem, rtol=1e-8, atol=0)  # its sum of squares cancels more
    assert curve.calls == math.ceil(3 * 5 / (_frozen_case(name).get("batch_size", 4) // 2))


class _CountingMap:
    """A condition map that counts its calls and the times it was given."""

    def __init__(self, inner):
        self.inner, self.calls, self.sizes = inner, 0, []

    def __call__(self, t):
        self.calls += 1
        self.sizes.append(t.numel())
        return self.inner(t)

    def config(self):
        return self.inner.config()


@pytest.mark.parametrize("prediction, output", [("eps", "net"), ("v", "eps"), ("edm", "net"), ("flow", "x0")])
def test_conditions_and_coefficients_are_made_once_per_curve(monkeypatch, prediction, output):
    """The condition map runs once per curve on all 2M times t and t′, and no schedule or condition-map
    call happens once the network calls have begun (8 calls here): per call, the network and gathers."""
    from etsdm.conditioning import process_sharing

    sched = {"eps": SCHED, "v": make_schedule("cosine", continuous=True), "edm": make_schedule("edm"),
             "flow": make_schedule("flow")}[prediction]
    cmap = _CountingMap(process_sharing(sched))
    net_calls, late = [], []

    def net(x, c, labels=None):
        net_calls.append(x.shape[0])
        return _cond_net(x, c, labels)

    for method in ("alpha", "sigma", "log_alpha", "net_time", "dalpha_dt", "dsigma_dt", "diffuse"):
        original = getattr(sched, method)

        def spy(*args, _original=original, _method=method, **kwargs):
            if net_calls:
                late.append(_method)
            return _original(*args, **kwargs)

        monkeypatch.setattr(sched, method, spy)
    den = Denoiser(net, sched, prediction, cmap)
    times = lipschitz_times(sched, t_start=None if sched.continuous else 1.0, log_points=5)
    x0 = _x0(3, 2)
    labels = torch.tensor([2, 0, 1])
    curve = lipschitz_curve(den, x0, sched, times, output=output, batch_size=4, cond={"labels": labels})
    assert len(net_calls) == curve.calls == 8 and late == []
    assert cmap.calls == 1 and cmap.sizes == [2 * len(times)]


def test_a_denoiser_subclass_overriding_its_output_is_measured_through_it():
    """A subclass that overrides what the plan replaces (here net_output, doubled) is evaluated through
    its own method at physical times: K doubles exactly; one overriding only net_condition (the
    float64 condition of Float64Denoiser) keeps the plan and its condition."""
    from etsdm.analytic import Float64Denoiser

    class Doubled(Denoiser):
        def net_output(self, x, t, c=None, **cond):
            return 2 * super().net_output(x, t, c, **cond)

    sharing = TimestepSharing(100, 5, T=1000)
    times, x0 = lipschitz_times(SCHED, t_end=120, stride=7), _x0(4, 2)
    k = {kind: lipschitz_curve(kind(_cond_net, SCHED, "v", sharing), x0, SCHED, times, batch_size=6,
                               generator=torch.Generator().manual_seed(0)).K
         for kind in (Denoiser, Doubled, Float64Denoiser)}
    torch.testing.assert_close(k[Doubled], 2 * k[Denoiser], rtol=1e-14, atol=0)
    assert bool((k[Denoiser][times < 99] == 0).all()) and bool((k[Float64Denoiser][times < 99] == 0).all())
    seen = []
    lipschitz_curve(Float64Denoiser(lambda x, c: seen.append(c.dtype) or x, SCHED, "eps"), x0, SCHED, times)
    assert set(seen) == {torch.float64}


def test_plot_of_curves_that_are_all_zero_uses_a_linear_axis(tmp_path):
    from etsdm.plotting import plot_lipschitz

    curve = {"label": "E-TSDM inside one cell", "t": [0.0, 1.0, 2.0], "K": [0.0, 0.0, 0.0], "dt": 1.0}
    paths = plot_lipschitz([curve], tmp_path / "k.png")  # log requested (the default): no crash
    assert paths and all(p.stat().st_size > 0 for p in paths)
