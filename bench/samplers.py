"""Sampler loop overhead per network evaluation: etsdm vs a hand-written loop vs diffusers (issue 11).

With a network that costs nothing (it returns a fixed tensor), a sampler's time is its own loop: the
Python per step, the tensor ops of its update, the condition map and the plan. For every etsdm
sampler this times, in one run, interleaved round by round (best of ``--repeats``):

* ``hand``: a hand-written loop doing the same update — conditions, α, σ and every step coefficient
  computed before the timed region (once per plan), the update as the fewest fused tensor ops the
  formula allows, the same kernels etsdm uses (k·x as x + (k - 1)·x, then in-place adds with alpha);
  written from the papers' formulas (Song et al., Ho et al., Lu et al. 2022 / 2022b, Karras et al.
  Alg. 1), independently of etsdm's samplers; ``max|hand-etsdm|`` checks it is the same update;
* ``etsdm``: ``etsdm.sample(Denoiser(net, schedule, prediction, condition), noise, schedule, sampler,
  nfe)`` with the identity condition and with E-TSDM (the default sharing of the process: VP
  t̃ = 100, n = 5; EDM σ̃ = 0.342 in log-SNR); everything per call (plan from the cache, the
  conditions, the loop), calls repeated on one Denoiser (which reuses its last call's condition
  tensors, as a hand loop keeps its own: a Denoiser's first call makes them, ~45 µs per 100);
  ``cond``: the conditions part of such a call;
* ``diffusers``: the same sampler's diffusers scheduler in a pipeline's loop (``set_timesteps``,
  ``scale_model_input``, model, ``step``): DDPMScheduler, DDIMScheduler, DPMSolverSinglestepScheduler
  (order 1/2/3), DPMSolverMultistepScheduler (dpmsolver++, order 2), EDMEulerScheduler (euler),
  HeunDiscreteScheduler (heun: on linear VP with Karras σ's — diffusers has no EDM Heun; its step
  costs the same on any table).

DDPM / DDIM / DPM-Solver run on linear VP (T = 1000, ε-prediction), Euler / Heun on EDM (Karras et
al.'s preconditioning, ``prediction="edm"``, so the network input c_in·x is one op of the loop).
Columns are µs per network evaluation; ratios ``etsdm/hand`` (goal <= 1.25) and ``etsdm/diffusers``
(goal < 1).

    python bench/samplers.py                    # CPU, 1 thread, batch 4x3x8x8, NFE 100, best of 5
    python bench/samplers.py --samplers ddim heun --nfe 50 --repeats 9
"""

from __future__ import annotations

import argparse
import math
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EDMEulerScheduler,
    HeunDiscreteScheduler,
)
from torch import Tensor

from etsdm import SAMPLERS, Denoiser, make_schedule, plan, sample
from etsdm.conditioning import process_sharing
from etsdm.samplers import evaluation_times, init_noise_sigma

SIGMA_DATA = 0.5
LINEAR = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


class Fixed:
    """The zero-cost network: net(x, c) returns one fixed tensor (of x's shape)."""

    def __init__(self, like: Tensor):
        self.out = torch.randn(like.shape, generator=torch.Generator().manual_seed(1), dtype=like.dtype).to(like.device)

    def __call__(self, x: Tensor, c: Tensor) -> Tensor:
        return self.out


def process_of(sampler: str) -> str:
    return "edm" if sampler in ("euler", "heun") else "linear"


class Pt:
    """α, σ, λ at one time (the data exactly: α = 1, σ = 0, λ = ∞)."""

    def __init__(self, schedule, t: float):
        self.t = t
        if t == schedule.t_data:
            self.alpha, self.sigma, self.lam = 1.0, 0.0, math.inf
        else:
            self.alpha, self.sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
            self.lam = math.log(self.alpha / self.sigma)


# ---------------------------------------------------------------------------------------------
# Hand-written loops: coefficients per plan (untimed), then only the loop
# ---------------------------------------------------------------------------------------------
def _conds(times: list[float], condition, schedule, like: Tensor) -> dict[float, Tensor]:
    """The network's condition at each time, made once (as a hand loop would)."""
    return {t: torch.full((like.shape[0],), float(schedule.net_time(condition(torch.tensor(t, dtype=torch.float64)))),
                          device=like.device) for t in times}


def hand_vp(sampler: str, net: Fixed, schedule, times: list[float], orders: list[int], conds, gen) -> Callable:
    """DDPM (Ho et al. Eq. 10 / Alg. 2), DDIM / DPM-Solver-1 (x_s = (α_s/α_t) x - σ_s (e^h - 1) ε),
    DPM-Solver-2/3 (Lu et al. Alg. 1/2), DPM-Solver++(2M) (Lu et al. 2022b Alg. 2), ε-prediction."""
    pts = [Pt(schedule, t) for t in times]
    prog: list[tuple] = []
    j = 0
    prev = None  # (h, p) of the previous multistep step
    for order in orders:
        p, q = pts[j], pts[j + (order if sampler.startswith("dpm-solver-") else 1)]
        c = conds[p.t]
        if q.sigma == 0.0:  # into the data: x0 = (x - σ ε)/α
            prog.append(("1", c, 1 / p.alpha - 1.0, -p.sigma / p.alpha))
        elif sampler == "ddpm":
            frac = -math.expm1(-2 * (q.lam - p.lam))
            a = q.alpha * frac / p.alpha + p.alpha / q.alpha * q.sigma**2 / p.sigma**2
            prog.append(("ddpm", c, a - 1.0, -q.alpha * frac * p.sigma / p.alpha, math.sqrt(frac) * p.sigma))
        elif sampler == "dpm-solver++2m":
            h = q.lam - p.lam
            cd = -q.alpha * math.expm1(-h)  # x_s = (σ_s/σ_t) x + cd·D
            if prev is None or order == 1:
                prog.append(("1", c, q.sigma / p.sigma + cd / p.alpha - 1.0, -cd * p.sigma / p.alpha))
            else:
                h0, p0 = prev
                w1, w0 = 1 + h / (2 * h0), -h / (2 * h0)  # D = w1 x0 + w0 x0_prev (1/(2r) = h/(2 h_prev))
                prog.append(("2m", c, q.sigma / p.sigma + cd * w1 / p.alpha - 1.0, -cd * w1 * p.sigma / p.alpha,
                             cd * w0 / p0.alpha, -cd * w0 * p0.sigma / p0.alpha))
            prev = (h, p)
        elif order == 1:
            prog.append(("1", c, q.alpha / p.alpha - 1.0, -q.sigma * math.expm1(q.lam - p.lam)))
        else:
            h = q.lam - p.lam
            s1 = pts[j + 1]
            r1 = (s1.lam - p.lam) / h
            u1 = (s1.alpha / p.alpha - 1.0, -s1.sigma * math.expm1(r1 * h))
            if order == 2:
                k = q.sigma / (2 * r1) * math.expm1(h)
                prog.append(("2", c, conds[s1.t], u1, q.alpha / p.alpha - 1.0, -q.sigma * math.expm1(h) + k, -k))
            else:
                s2 = pts[j + 2]
                r2 = (s2.lam - p.lam) / h
                c2 = s2.sigma * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0)
                u2 = (s2.alpha / p.alpha - 1.0, -s2.sigma * math.expm1(r2 * h) + c2, -c2)
                k = q.sigma / r2 * (math.expm1(h) / h - 1.0)
                prog.append(("3", c, conds[s1.t], conds[s2.t], u1, u2, q.alpha / p.alpha - 1.0,
                             -q.sigma * math.expm1(h) + k, -k))
        j += order if sampler.startswith("dpm-solver-") else 1

    def run(x: Tensor) -> Tensor:
        for st in prog:
            kind, e = st[0], net(x, st[1])
            if kind == "1":
                x = torch.add(x, x, alpha=st[2]).add_(e, alpha=st[3])
            elif kind == "ddpm":
                z = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
                x = torch.add(x, x, alpha=st[2]).add_(e, alpha=st[3]).add_(z, alpha=st[4])
            elif kind == "2":
                (a1, b1), a, b0, b1_ = st[3], st[4], st[5], st[6]
                u = torch.add(x, x, alpha=a1).add_(e, alpha=b1)
                e1 = net(u, st[2])
                x = torch.add(x, x, alpha=a).add_(e, alpha=b0).add_(e1, alpha=b1_)
            else:
                (a1, b1), (a2, b20, b21), a, b0, b2 = st[4], st[5], st[6], st[7], st[8]
                u = torch.add(x, x, alpha=a1).add_(e, alpha=b1)
                e1 = net(u, st[2])
                u = torch.add(x, x, alpha=a2).add_(e, alpha=b20).add_(e1, alpha=b21)
                e2 = net(u, st[3])
                x = torch.add(x, x, alpha=a).add_(e, alpha=b0).add_(e2, alpha=b2)
        return x

    def run_2m(x: Tensor) -> Tensor:  # keeps x and ε of the step before
        xp = ep = None
        for st in prog:
            e = net(x, st[1])
            if st[0] == "1":
                x, xp, ep = torch.add(x, x, alpha=st[2]).add_(e, alpha=st[3]), x, e
            else:
                x, xp, ep = torch.add(x, x, alpha=st[2]).add_(e, alpha=st[3]).add_(xp, alpha=st[4]).add_(
                    ep, alpha=st[5]), x, e
        return x

    return run_2m if sampler == "dpm-solver++2m" else run


def hand_edm(sampler: str, net: Fixed, schedule, times: list[float], orders: list[int], conds) -> Callable:
    """Karras et al. Alg. 1 (Heun; Euler for order-1 steps) on EDM, D(x; σ) = c_skip x + c_out F(c_in x),
    dx/dσ = (x - D)/σ; the step into σ = 0 is D."""

    def pre(sig: float) -> tuple[float, float, float]:
        root = math.sqrt(sig**2 + SIGMA_DATA**2)
        return SIGMA_DATA**2 / root**2, sig * SIGMA_DATA / root, 1.0 / root  # c_skip, c_out, c_in

    prog: list[tuple] = []
    for j, order in enumerate(orders):  # corrector layout: one interval per step
        s, sn = times[j], times[j + 1]
        c_skip, c_out, c_in = pre(s)
        if sn == 0.0:
            prog.append(("D", conds[s], c_in - 1.0, c_skip - 1.0, c_out))
            continue
        dt = sn - s
        a, b = 1 + dt * (1 - c_skip) / s, -dt * c_out / s  # x' = x + dt (x - D)/σ
        if order == 1:
            prog.append(("E", conds[s], c_in - 1.0, a - 1.0, b))
        else:
            c_skip2, c_out2, c_in2 = pre(sn)
            h = 0.5 * dt
            prog.append(("H", conds[s], c_in - 1.0, a - 1.0, b, conds[sn], c_in2 - 1.0,
                         h * (1 - c_skip) / s, h * -c_out / s, h * (1 - c_skip2) / sn, h * -c_out2 / sn))

    def run(x: Tensor) -> Tensor:
        for st in prog:
            f = net(torch.add(x, x, alpha=st[2]), st[1])
            if st[0] == "D":
                x = torch.add(x, x, alpha=st[3]).add_(f, alpha=st[4])
            elif st[0] == "E":
                x = torch.add(x, x, alpha=st[3]).add_(f, alpha=st[4])
            else:
                xe = torch.add(x, x, alpha=st[3]).add_(f, alpha=st[4])
                f2 = net(torch.add(xe, xe, alpha=st[6]), st[5])
                x = torch.add(x, x, alpha=st[7]).add_(f, alpha=st[8]).add_(xe, alpha=st[9]).add_(f2, alpha=st[10])
        return x

    return run


# ---------------------------------------------------------------------------------------------
# diffusers' loops
# ---------------------------------------------------------------------------------------------
def diffusers_scheduler(sampler: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # algorithm_type="dpmsolver" is deprecated there
        if sampler == "ddim":
            return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **LINEAR)
        if sampler == "ddpm":
            return DDPMScheduler(clip_sample=False, variance_type="fixed_large", **LINEAR)
        if sampler == "dpm-solver++2m":
            return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **LINEAR)
        if sampler == "euler":
            return EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=SIGMA_DATA)
        if sampler == "heun":
            return HeunDiscreteScheduler(use_karras_sigmas=True, **LINEAR)
        return DPMSolverSinglestepScheduler(algorithm_type="dpmsolver", solver_order=int(sampler[-1]),
                                            final_sigmas_type="sigma_min", **LINEAR)


def diffusers_loop(sampler: str, net: Fixed, nfe: int, noise: Tensor, gen) -> tuple[Callable, int]:
    """A pipeline's loop; returns it and its number of network evaluations at ``nfe``."""
    scheduler = diffusers_scheduler(sampler)
    steps = (nfe + 1) // 2 if sampler == "heun" else nfe  # Heun: 2N - 1 evaluations for N steps
    kwargs = {"generator": gen} if sampler == "ddpm" else {}

    def run(x: Tensor = noise) -> Tensor:
        scheduler.set_timesteps(steps, device=x.device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            out = net(scheduler.scale_model_input(x, t), t.expand(x.shape[0]))
            x = scheduler.step(out, t, x, **kwargs).prev_sample
        return x

    scheduler.set_timesteps(steps)
    return run, len(scheduler.timesteps)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def cells_for(sampler: str, nfe: int, noise: Tensor) -> tuple[dict[str, Callable], int, float]:
    """The four timed loops of one sampler, diffusers' evaluation count and max|hand - etsdm|."""
    schedule = make_schedule(process_of(sampler))
    prediction = "edm" if schedule.kind == "edm" else "eps"
    net = Fixed(noise)
    x_t = init_noise_sigma(schedule) * noise
    times, orders = plan(schedule, sampler, nfe)
    ident = Denoiser(net, schedule, prediction)
    etsdm = Denoiser(net, schedule, prediction, process_sharing(schedule))
    conds = _conds(times, ident.condition, schedule, noise)
    gens = {k: torch.Generator(device=noise.device) for k in ("hand", "id", "etsdm", "diffusers")}

    def seeded(key: str) -> torch.Generator:
        return gens[key].manual_seed(0)

    if schedule.kind == "edm":
        hand = hand_edm(sampler, net, schedule, times, orders, conds)
        hand_run = lambda: hand(x_t)  # noqa: E731
    else:
        hand_vp_run = hand_vp(sampler, net, schedule, times, orders, conds, gens["hand"])
        hand_run = lambda: (seeded("hand"), hand_vp_run(x_t))[1]  # noqa: E731
    theirs, n_theirs = diffusers_loop(sampler, net, nfe, noise, gens["diffusers"])
    with torch.inference_mode(False):  # as a plan's times tensor (an inference tensor is compared by value)
        distinct = torch.tensor(sorted(set(evaluation_times(sampler, times, orders))), dtype=torch.float64)
    conditions_only = Denoiser(net, schedule, prediction, etsdm.condition)  # its own reused rows (as a repeated call)
    cells = {
        "conditions": lambda: conditions_only.conditions(distinct, x_t),
        "hand": hand_run,
        "etsdm id": lambda: sample(ident, x_t, schedule, sampler, nfe, generator=seeded("id")),
        "etsdm E-TSDM": lambda: sample(etsdm, x_t, schedule, sampler, nfe, generator=seeded("etsdm")),
        "diffusers": lambda: (seeded("diffusers"), theirs(noise))[1],
    }
    ours, mine = cells["etsdm id"](), cells["hand"]()
    diff = float((ours - mine).abs().max() / ours.abs().max().clamp(min=1e-30))
    return cells, n_theirs, diff


def best_times(cells: dict[Any, Callable], repeats: int, calls: int) -> dict[Any, float]:
    """Best (over ``repeats`` interleaved rounds, each in a shuffled order) mean time per call."""
    for fn in cells.values():  # warm-up
        fn()
    best = {key: math.inf for key in cells}
    order = list(cells)
    for rnd in range(repeats):
        random.Random(rnd).shuffle(order)
        for key in order:
            fn = cells[key]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[key] = min(best[key], (time.perf_counter() - start) / calls)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--nfe", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs=4, default=[4, 3, 8, 8], help="noise shape")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (best reported)")
    parser.add_argument("--calls", type=int, default=5, help="sample() calls per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    noise = torch.randn(args.batch, generator=torch.Generator().manual_seed(0)).to(device)
    cells: dict[tuple[str, str], Callable] = {}
    evals: dict[str, int] = {}
    checks: dict[str, float] = {}
    with torch.inference_mode():
        for sampler in args.samplers:
            own, evals[sampler], checks[sampler] = cells_for(sampler, args.nfe, noise)
            cells.update({(sampler, kind): fn for kind, fn in own.items()})
        t = best_times(cells, args.repeats, args.calls)
    print(f"device={device} threads={torch.get_num_threads()} batch={tuple(args.batch)} NFE={args.nfe} "
          f"best of {args.repeats} interleaved rounds x {args.calls} calls, torch {torch.__version__}")
    print("µs per network evaluation (zero-cost network); goals: etsdm/hand <= 1.25, etsdm/diffusers < 1; "
          "cond: of etsdm's E-TSDM time, the conditions of a repeated call (the last call's tensors reused)")
    head = (f"{'sampler':15} {'process':7} {'hand':>6} {'etsdm':>6} {'E-TSDM':>6} {'cond':>5} {'diffusers':>9} "
            f"{'id/hand':>7} {'E-TSDM/hand':>11} {'E-TSDM/diff':>11} {'max|hand-etsdm|':>15}")
    print(head)
    for sampler in args.samplers:
        per = {kind: t[(sampler, kind)] * 1e6 / args.nfe
               for kind in ("hand", "etsdm id", "etsdm E-TSDM", "conditions")}
        per["diffusers"] = t[(sampler, "diffusers")] * 1e6 / evals[sampler]
        worst = max(per["etsdm id"], per["etsdm E-TSDM"])
        flag = "" if worst <= 1.25 * per["hand"] and worst < per["diffusers"] else "  <- misses"
        print(f"{sampler:15} {process_of(sampler):7} {per['hand']:6.2f} {per['etsdm id']:6.2f} "
              f"{per['etsdm E-TSDM']:6.2f} {per['conditions']:5.2f} {per['diffusers']:9.2f} "
              f"{per['etsdm id'] / per['hand']:7.2f} "
              f"{per['etsdm E-TSDM'] / per['hand']:11.2f} {per['etsdm E-TSDM'] / per['diffusers']:11.2f} "
              f"{checks[sampler]:15.1e}{flag}")


if __name__ == "__main__":
    main()
