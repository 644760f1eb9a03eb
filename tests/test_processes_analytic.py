"""The one exact-denoiser path on every process (issue 9): closed forms on EDM and flow for every
prediction type, the ideal E-TSDM optimum per sub-interval against brute-force quadrature,
regression against the pre-refactor VP code, and Theorem 3.1 per process."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from etsdm import Denoiser, GaussianMixture, TimestepSharing, make_schedule
from etsdm.analysis import as_denoiser, lipschitz_curve, perturbation_error, singularity_table
from etsdm.analysis.specs import analytic_model
from etsdm.analytic import exact_denoiser, time_from_net
from etsdm.conditioning import process_sharing
from etsdm.denoiser import PREDICTIONS

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
MU, S = torch.tensor([0.7, -0.4], dtype=F64), 0.3
SINGLE = GaussianMixture(MU[None], S)  # one Gaussian N(μ, s² I), D = 2
RING = GaussianMixture.ring()
TIMES = {"edm": [0.003, 0.3, 5.0, 60.0], "flow": [1e-3, 0.2, 0.6, 0.95], "linear": [1e-3, 0.05, 0.5, 0.9]}
SD = 0.5  # EDM's σ_data


def _schedule(process: str):
    return make_schedule(process, continuous=True) if process == "linear" else make_schedule(process)


def _single_gaussian_posterior(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """E[ε | x_t = x], E[x0 | x_t = x] for x0 ~ N(μ, s² I): v = α² s² + σ²."""
    alpha, sigma = alpha[:, None], sigma[:, None]
    v = alpha**2 * S**2 + sigma**2
    return sigma * (x - alpha * MU) / v, MU + alpha * S**2 * (x - alpha * MU) / v


@pytest.mark.parametrize("process", ["edm", "flow", "linear"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_exact_denoiser_is_the_posterior_mean_of_a_single_gaussian(process, prediction):
    """Whatever the network outputs (ε, v, x0, EDM's F, the velocity), the Denoiser's estimate of
    the exact net is the closed-form posterior mean — in float64, and through a plain Denoiser
    that hands the same net a float32 condition (decoded back to the time / σ)."""
    sched = _schedule(process)
    x = 2.5 * torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor(TIMES[process], dtype=F64).repeat_interleave(len(x))
    x = x.repeat(len(TIMES[process]), 1)
    eps_ref, x0_ref = _single_gaussian_posterior(x, sched.alpha(t), sched.sigma(t))
    den = exact_denoiser(SINGLE, sched, prediction)
    est = den.estimate(x, t)
    torch.testing.assert_close(est.x0, x0_ref, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(est.eps, eps_ref, rtol=1e-9, atol=1e-11)
    plain = Denoiser(den.net, sched, prediction).estimate(x, t)  # c in float32
    torch.testing.assert_close(plain.x0, x0_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain.eps, eps_ref, rtol=1e-4, atol=1e-5)


def test_time_from_net_inverts_net_time():
    edm, flow = make_schedule("edm"), make_schedule("flow")
    sigma = torch.tensor([1e-6, 0.002, 0.3, 7.0, 80.0], dtype=F64)
    torch.testing.assert_close(time_from_net(edm, edm.net_time(sigma)), sigma, rtol=1e-14, atol=0)
    t = torch.tensor([0.0, 1e-7, 0.5], dtype=F64)
    assert torch.equal(time_from_net(flow, flow.net_time(t)), t)  # the identity, exactly


def _brute_force_shared(y, lo, hi, sched, value, log_jacobian=None, points=1001):
    """Posterior mean of value(x, τ) over τ ∈ [lo, hi), τ uniform, by the trapezoid rule on a fine
    grid: weights q_τ(x) |dx/dy|, with x = x_of_y(y, τ) inside ``value``."""
    taus = torch.linspace(lo, hi, points, dtype=F64)
    vals, logw = [], []
    for tau in taus.tolist():
        x, v = value(y, tau)
        vals.append(v)
        logw.append(RING.log_prob(x, tau, sched) + (log_jacobian(tau) if log_jacobian else 0.0))
    vals, logw = torch.stack(vals), torch.stack(logw)
    trap = torch.full((points,), 1.0, dtype=F64)
    trap[[0, -1]] = 0.5
    w = torch.softmax(logw + trap.log()[:, None], 0)
    return (w[:, :, None] * vals).sum(0)


def test_ideal_etsdm_on_flow_is_constant_in_each_subinterval_and_the_posterior_mean_of_u():
    sched = make_schedule("flow")
    sharing = process_sharing(sched)
    shared, base = exact_denoiser(RING, sched, "flow", sharing), exact_denoiser(RING, sched, "flow")
    y = RING.sample(5, torch.Generator().manual_seed(1)) * 0.8
    b = sharing.boundaries
    for lo, hi in zip(b, b[1:], strict=False):
        outs = [shared.net_output(y, lo + f * (hi - lo)) for f in (0.0, 0.3, 0.7, 0.999)]
        assert all(torch.equal(o, outs[0]) for o in outs[1:])
    plain = Denoiser(shared.net, sched, "flow", sharing)  # the same net fed a float32 condition
    for t in (b[0], b[1], 0.5 * (b[1] + b[2]), b[-1] * (1 - 1e-9)):  # inside the band: the same cell, bit for bit
        assert torch.equal(plain.net_output(y, t), shared.net_output(y, t))
    lo, hi = b[1], b[2]

    def velocity(x, tau):  # u = α' x0 + σ' ε = ε - x0, with x0 = (x - σ ε)/α from ε* (another route)
        eps = RING.eps(x, tau, sched)
        return x, eps - (x - tau * eps) / (1 - tau)

    ref = _brute_force_shared(y, lo, hi, sched, velocity)
    torch.testing.assert_close(shared.net_output(y, 0.5 * (lo + hi)), ref, rtol=1e-6, atol=1e-8)
    for t in (b[-1], b[-1] * 1.01, 0.6):  # t >= t̃: the exact optimum itself
        assert torch.equal(shared.net_output(y, t), base.net_output(y, t))
    assert not torch.allclose(shared.net_output(y, lo), base.net_output(y, lo))


def test_ideal_etsdm_on_edm_averages_F_given_the_network_input():
    """EDM's network sees y = c_in(σ) x: the ideal E-TSDM F̄ of a sub-interval is a function of y
    (constant in σ inside it for a fixed y), the posterior mean of F over σ with weights
    q_σ(y/c_in) c_in^-D — checked against EDM Table 1's formulas on a fine σ grid. Below σ_min the
    first sub-interval's value applies; from σ̃ on the exact optimum."""
    sched = make_schedule("edm")
    sharing = process_sharing(sched)
    shared, base = exact_denoiser(RING, sched, "edm", sharing), exact_denoiser(RING, sched, "edm")
    b = sharing.boundaries
    assert b[0] == sched.sigma_min and b[-1] == pytest.approx(0.342, abs=1e-3)
    y = RING.sample(4, torch.Generator().manual_seed(2)) * 0.9
    lo, hi = b[2], b[3]

    def net(sigma):
        return shared.net(y, shared.net_condition(sigma, y))

    outs = [net(s) for s in (lo, lo + 0.4 * (hi - lo), hi * (1 - 1e-9))]
    assert all(torch.equal(o, outs[0]) for o in outs[1:])

    def f_target(yy, sigma):  # EDM Table 1 (α = 1): x = y / c_in, F = (D - c_skip x) / c_out
        x = yy * math.sqrt(sigma**2 + SD**2)
        d = x - sigma * RING.eps(x, sigma, sched)
        c_skip, c_out = SD**2 / (sigma**2 + SD**2), sigma * SD / math.sqrt(sigma**2 + SD**2)
        return x, (d - c_skip * x) / c_out

    ref = _brute_force_shared(y, lo, hi, sched, f_target, lambda s: 2 * 0.5 * math.log(s**2 + SD**2))
    torch.testing.assert_close(outs[0], ref, rtol=1e-6, atol=1e-8)
    x = RING.sample(4, torch.Generator().manual_seed(3))
    below = shared.net(x / math.sqrt(1e-8 + SD**2), shared.net_condition(b[0], x))  # σ = 1e-4 < σ_min: cell 0
    torch.testing.assert_close(shared.net_output(x, 1e-4), below, rtol=1e-14, atol=0)
    for s in (b[-1], 1.0, 20.0):  # (σ decoded from c_noise by each net: equal to rounding)
        torch.testing.assert_close(shared.net_output(x, s), base.net_output(x, s), rtol=1e-12, atol=0)


@pytest.mark.parametrize("process, space", [("edm", "log-snr"), ("edm", "t"), ("flow", "t"), ("flow", "log-snr")])
def test_subinterval_quadrature_converged_on_edm_and_flow(process, space):
    """48 Gauss-Legendre nodes (τ = t_i + Δ u²) give every sub-interval's optimum to 1e-12 of 160."""
    from etsdm.analytic import subinterval_nodes

    sched = make_schedule(process)
    sharing = process_sharing(sched, space=space)
    x = torch.cat([RING.sample(8, torch.Generator().manual_seed(4)), torch.tensor([[1.5, 1.5], [0.3, -0.2]])])
    for lo, hi in zip(sharing.boundaries, sharing.boundaries[1:], strict=False):
        a, b = (RING.shared_mean(x, *subinterval_nodes(lo, hi - lo, sched, m), sched, lambda _x, _t, e: e.x0)
                for m in (48, 160))  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- the single path gives the old numbers on VP (values computed with the pre-refactor code:
# runs.analytic_denoiser / analysis.specs._ClosedForm, commit c6d7e22) ---------------------------
X_REF = torch.tensor([[2.05, 0.1], [1.3, 1.5], [0.0, -1.9], [-0.5, 0.3], [1.0, -1.2]], dtype=F64)
OLD_EPS = {  # spec, t -> ε of the first two points
    ("gmm:etsdm", 47.0): [[0.3479455349482604, 0.44093490111059286], [-0.41272108336776525, 0.4683231100625094]],
    ("gmm:etsdm-uniform:continuous", 0.05): [[0.3491133205071394, 0.4382679360607862],
                                             [-0.40865213731248695, 0.4678837293124596]],
    ("gmm:continuous", 1e-4): [[0.015877150013842756, 0.0317478872881237],
                               [-0.03625812580414599, 0.027237648772101473]],
}  # fmt: skip
OLD_K_ETSDM = [0.0, 0.0, 0.22527827539467982, 0.0, 0.13737665561071985, 0.012831680035874952, 0.004897566544374825]
OLD_STAB_ETSDM_T50 = [0.0001440640493073095, 0.0007285931092525744, 0.01967733986898662, 0.058006640709663514]


def test_single_path_reproduces_the_old_vp_numbers():
    for (spec, t), eps in OLD_EPS.items():
        m = analytic_model(spec)
        torch.testing.assert_close(m.denoiser.eps(X_REF, t)[:2], torch.tensor(eps, dtype=F64), rtol=1e-12, atol=0)
    m = analytic_model("gmm:etsdm")
    x0 = m.dataset("train", 32)
    times = torch.tensor([0.0, 10.0, 19.0, 50.0, 99.0, 100.0, 300.0], dtype=F64)
    k = lipschitz_curve(m, x0, m.schedule, times, generator=torch.Generator().manual_seed(0)).K
    torch.testing.assert_close(k, torch.tensor(OLD_K_ETSDM, dtype=F64), rtol=1e-10, atol=0)
    stab = perturbation_error(m, x0, m.schedule, t=50, generator=torch.Generator().manual_seed(0)).error
    torch.testing.assert_close(stab, torch.tensor(OLD_STAB_ETSDM_T50, dtype=F64), rtol=1e-10, atol=0)
    direct = exact_denoiser(RING, make_schedule("linear"), "eps", TimestepSharing(100, 5))
    torch.testing.assert_close(direct.eps(X_REF, 47.0)[:2], torch.tensor(OLD_EPS["gmm:etsdm", 47.0], dtype=F64),
                               rtol=1e-12, atol=0)  # fmt: skip


def test_as_denoiser_hands_a_callable_its_exact_time_and_converts_with_the_denoiser():
    sched = make_schedule("edm")
    seen = []

    def eps_fn(x, t):
        seen.append(t.clone())
        return 0.1 * x * t[:, None]

    den = as_denoiser(eps_fn, sched)
    x = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.002, 0.5, 30.0], dtype=F64)
    x0 = den.x0(x, t)
    torch.testing.assert_close(seen[-1], t, rtol=1e-15, atol=0)
    torch.testing.assert_close(x0, x - t[:, None] * 0.1 * x * t[:, None], rtol=1e-14, atol=0)  # α = 1, σ = t
    with pytest.raises(ValueError, match="schedule"):
        as_denoiser(eps_fn)


def test_analytic_specs_on_edm_and_flow():
    for spec, prediction in (("gmm:etsdm:edm", "edm"), ("gmm:flow", "flow"), ("gmm:etsdm-uniform:flow", "flow")):
        m = analytic_model(spec)
        assert m.denoiser.prediction == prediction and m.schedule.kind == spec.rsplit(":", 1)[1]
    assert analytic_model("gmm:etsdm:edm").denoiser.condition.config()["space"] == "log-snr"


# --- Theorem 3.1 per process --------------------------------------------------------------------
E_NORM_OVER_S = math.sqrt(math.pi / 2) / 0.1  # E‖z‖ / s for z ~ N(0, I_2), the ring's s = 0.1


def test_theory_table_vp_singular_edm_and_flow_bounded():
    rows = [("linear", "eps", "time"), ("linear", "v", "time"), ("edm", "eps", "time"), ("edm", "eps", "net"),
            ("flow", "flow", "time")]  # fmt: skip
    ladder = (1e-2, 1e-3, 1e-4, 1e-5)
    res = {(r["process"], r["output"], r["variable"]): r for r in singularity_table(
        rows, ladder=ladder, samples=200, band_nodes=4, curve_points=2)["rows"]}  # fmt: skip
    for out in ("eps", "v"):  # the paper: K grows toward t = 0, like t^-½
        r = res["linear", out, "t"]
        assert all(a > 2.5 * b for a, b in zip(r["K"][1:], r["K"], strict=False)), r["K"]
        assert r["p"] == pytest.approx(0.5, abs=0.03) and r["singular"].startswith("yes")
        assert r["etsdm_inside_max"] == 0 and min(r["etsdm_jump"]) > 0
    # closed-form limit σ'(t) E‖∇log q_0‖ with σ ≈ sqrt(β̄_min t): K sqrt(t) -> ½ sqrt(0.1) E‖z‖/s
    assert res["linear", "eps", "t"]["K"][-1] * math.sqrt(1e-5) == pytest.approx(
        0.5 * math.sqrt(0.1) * E_NORM_OVER_S, rel=0.1)  # fmt: skip
    sig = res["edm", "eps", "σ"]  # σ' = 1: ∂ε*/∂σ -> -∇log q_0, bounded
    assert abs(sig["p"]) < 0.05 and sig["singular"].startswith("no")
    assert sig["K"][-1] == pytest.approx(E_NORM_OVER_S, rel=0.1)
    c = res["edm", "eps", "c_noise"]  # dσ/dc = 4σ: K -> 0 in the network's own input
    assert c["p"] == pytest.approx(-1.0, abs=0.05) and c["K"][-1] == pytest.approx(4e-5 * sig["K"][-1], rel=1e-3)
    assert c["baseline_band_mean"] * (c["band_in_variable"][1] - c["band_in_variable"][0]) == pytest.approx(
        sig["baseline_band_mean"] * (sig["band"][1] - sig["band"][0]), rel=1e-12)  # ∫K dt: the same in σ and c
    u = res["flow", "flow", "t"]
    assert abs(u["p"]) < 0.05 and u["K"][-1] == pytest.approx(E_NORM_OVER_S, rel=0.1)


def test_schedules_processes_cli(tmp_path, monkeypatch):
    import etsdm.analysis.processes as processes
    from etsdm.cli import main

    full = processes.singularity_table
    monkeypatch.setattr(processes, "PROCESS_ROWS", [("flow", "eps", "time")])
    monkeypatch.setattr(processes, "DATA_SCALE_ROWS", [("flow", "flow", "time")])
    monkeypatch.setattr(processes, "singularity_table", lambda rows, **kw: full(
        rows, **kw, ladder=(1e-2, 1e-3, 1e-4), band_nodes=4, curve_points=3))
    res = CliRunner().invoke(main, ["schedules", "--processes", "--process-samples", "50", "--process-data-std",
                                    "0.1,0.01", "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "| flow | ε | t |" in res.output and "no: K → const" in res.output and "std 0.01" in res.output
    for name in ("processes.png", "processes_data_scale.png", "processes.md", "processes.json"):
        assert (tmp_path / name).is_file(), name
