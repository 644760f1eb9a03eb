"""Samplers: pure functions over ``model(x, t) -> ε`` in the schedule's own time, for any process.

Every sampler walks a list of times ``t_0 > t_1 > ... > t_K`` (``timesteps``) and a list of step
``orders``, and spends exactly ``nfe`` network evaluations. Samplers live in one registry
(:data:`SAMPLER_REGISTRY`: name -> :class:`SamplerSpec`, i.e. its maximum order, how it splits an NFE
budget into per-step orders, how a step of order k lays out on the grid, its step function); adding a
sampler is one entry there plus its step function. Three grid layouts:

* ``singlestep`` (DDPM, DDIM, DPM-Solver-1/2/3, Euler): a step of order k starts at t_j, evaluates
  the model at t_j .. t_{j+k-1} (the intermediate points of a singlestep solver) and lands on
  t_{j+k}: k evaluations, k grid intervals. So NFE = number of grid intervals, and any grid (ours or
  diffusers') can be replayed.
* ``multistep`` (DPM-Solver++(2M)): every step covers one interval with one evaluation; its order
  is how many past evaluations it uses.
* ``corrector`` (Heun): a step of order k covers one interval with k evaluations, at t_j and (the
  corrector) at t_{j+1}.

Samplers:

* ``ddpm``: ancestral sampling, Eq. (10) generalised to any step t -> s of any process:
  mean = α_s (σ_ts²/σ_t²) x̂0 + (α_t/α_s)(σ_s²/σ_t²) x_t with σ_ts² = σ_t² (1 - e^{-2h}),
  h = λ_s - λ_t, the forward transition's variance (VP: σ_ts² = β_ts = 1 - α_t²/α_s²); variance
  σ_ts² (``variance="beta"``, η_t² = β_t of Eq. 10) or the posterior σ_ts² σ_s²/σ_t²
  (``variance="posterior"``); no noise on the step into the data (Alg. A2).
* ``ddim`` (Song et al.): x_s = α_s x̂0 + sqrt(σ_s² - σ̃²) ε̂ + σ̃ z, σ̃ = η σ_s sqrt(1 - e^{-2h})
  (VP: η sqrt(σ_s²/σ_t² β_ts)).
* ``dpm-solver-1/2/3``: singlestep DPM-Solver (Lu et al. 2022, noise prediction, Alg. 1-2), NFE
  split into orders as that paper does (Sec. 3.4). DPM-Solver-1 *is* DDIM(η = 0) (Lu et al. Eq.
  3.7): both call one update, x_s = α_s x̂0 + σ_s ε̂ (= (α_s/α_t) x_t - σ_s (e^h - 1) ε̂).
  ``third_order_intermediate`` picks the rule for DPM-Solver-3's second intermediate point u2:
  ``"lu"`` (default, Alg. 2: u2 = ... - σ_s2 (r2/r1)(φ(r2 h) - 1)(ε_s1 - ε_t), φ(z) = (e^z - 1)/z)
  or ``"midpoint"`` (diffusers' DPMSolverSinglestepScheduler: a DPM-Solver-2 step t -> s2 through
  s1, u2 = ... - σ_s2 (r2/r1)(e^{r2 h} - 1)/2 (ε_s1 - ε_t)). The two u2 differ by O(h³) and both
  give a third-order solver (tests/test_samplers.py measures it); the other updates are identical.
* ``dpm-solver++2m``: multistep DPM-Solver++ (Lu et al. 2022b, data prediction, Alg. 2), 2nd order;
  first step first order; ``lower_order_final`` makes the last step first order when it lands on
  ``t_end`` and fewer than 15 steps are taken (with ``denoise_to_zero`` the last step into the data
  is already first order), as diffusers' DPMSolverMultistepScheduler does.
* ``euler`` / ``heun``: the probability-flow ODE in the process's own time,
  dx/dt = α'(t) x̂0 + σ'(t) ε̂ (EDM: Karras et al.'s dx/dσ = (x - D)/σ; flow: the velocity ε̂ - x̂0).
  ``heun`` is EDM's Algorithm 1: an Euler step then the trapezoidal (Heun) correction with a second
  evaluation at t_{j+1}, except on the step into the data (σ = 0), which is Euler's. N steps on
  the data-bound grid cost 2N - 1 evaluations, so odd NFE is EDM exactly; at even NFE the last
  noisy step (the smallest, on the default grids) is an Euler step: orders [2]·(B//2) + [1]·(B%2)
  for the B evaluations before the final step into the data (Lu et al.'s DPM-Solver-2 rule). Any
  step into the data returns x̂0, the Euler step in the scaled variables x/α, σ/α (Karras et al.
  Eq. 4), which is Euler's in t too for EDM and flow (α, σ affine in t).
  Stochastic churn (EDM Algorithm 2; ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``, default
  off) raises σ̃ = σ/α = e^{-λ} of each step's start by γ = min(s_churn/N, √2 - 1) (N = steps,
  the step into the data included, as EDM) when s_tmin <= σ̃ <= s_tmax, adds the matching noise in
  the scaled variables, x̃ += sqrt(σ̃̂² - σ̃²) s_noise z, and maps back with ``t_from_lambda``
  (EDM: exactly Algorithm 2).

Conventions (docs/samplers.md explains each choice; :func:`describe` records them with a result):

* **Processes.** α, σ and λ at every walked point come from the schedule (``log_alpha``,
  ``log_sigma``, ``lambda_``), so DDIM / DPM-Solver / DPM-Solver++ (which work in λ with α, σ)
  run unchanged on EDM and flow; ``t_data`` is the data exactly (α = 1, σ = 0). Euler / Heun also
  read α' = α dlog α/dt and σ' = σ dlog σ/dt.
* **Timestep spacing.** Discrete models were trained on integer timesteps only, so by default every
  sampler evaluates them at integers: ``timestep_spacing`` ``"linspace"`` (default), ``"leading"``
  or ``"trailing"``, rounded exactly as diffusers' ``timestep_spacing`` (DPMSolver schedulers'
  formulas for ``steps`` steps; with ``denoise_to_zero`` the DDIM/DDPM schedulers' N timesteps, whose
  ``trailing`` grid ends at T/N - 1 rather than at t_end).
  DPM-Solver-2/3 then take their intermediate points from the same integer grid, as diffusers'
  DPMSolverSinglestepScheduler does. ``"fractional"`` is the time-uniform float grid, i.e. what the
  official dpm-solver code does for discrete models (queries at t = 978.61, ...); ``"logSNR"`` and
  ``"time-quadratic"`` are float grids too. ``"karras"`` is Karras et al.'s ρ = 7 grid in
  σ̃ = σ/α = e^{-λ}. Continuous VP schedules and flow default to ``"time-uniform"``, EDM to
  ``"karras"``.
* **Order plan.** ``order_plan="lu"`` (default) splits the NFE as Lu et al. Sec. 3.4 and their code
  (``get_orders_and_timesteps_for_singlestep_solver``): DPM-Solver-3 at NFE 20 is [3]*6 + [2], all
  20 evaluations in the solver, the outer points at those positions of the NFE-point grid (or
  uniform in λ for ``logSNR``), intermediate points at r = 1/2 or 1/3, 2/3 in λ on float grids.
  ``order_plan="diffusers"`` uses diffusers' lower-order-final list (differs for DPM-Solver-2 at
  even NFE: [2, ..., 2, 1, 1]).
* **Final denoising step.** ``denoise_to_zero=True`` spends the last NFE on a first-order step
  from ``t_end`` into the data (σ = 0): x̂0 at t_end (Lu et al.'s ``denoise_to_zero``, but inside
  the NFE budget). Default (None): on for ``ddpm`` / ``ddim`` / ``euler`` / ``heun``, whose last
  step lands on the data (Ho et al. Alg. 2; diffusers' DDIM/DDPM with ``set_alpha_to_one``; EDM
  Alg. 1), off for the DPM-Solvers (Lu et al.'s default; they return x at t_end = t_min). For
  discrete schedules the data is t = -1, so DDPM with NFE = T walks T-1, ..., 0, -1 exactly as
  Algorithm A2 walks T, ..., 1, 0.
* **x̂0 clipping.** ``clip="static"`` clamps every x̂0 to [-1, 1] (ADM's ``clip_denoised``,
  diffusers' ``clip_sample``), ``"dynamic"`` is Saharia et al.'s dynamic thresholding (percentile
  0.995, s >= 1); ε̂ is then recomputed from the clipped x̂0, ε̂ = (x - α x̂0)/σ, as ADM's DDIM and
  diffusers' DPM-Solver do, so every sampler sees one consistent estimate. Default ``"none"``
  (the library does not know the data range; ``etsdm.runs.generate`` picks per data kind).
* **α = 0** (zero terminal SNR; continuous cosine at t = 1; flow at t = 1). Schedules floor α² at
  2⁻²⁴ to keep λ finite. For v-, x0- and flow-prediction Denoisers the samplers use α = 0 exactly
  at such points (σ = 1 on VP, σ(t) otherwise; x̂0 = -v/σ, x̂0 = x0, or x̂0 = (u - σ' x/σ)/α' from
  the velocity u; ε̂ = x/σ); a DPM-Solver step starting there is first order (λ = -∞: DDIM's step
  is the exact limit), so a singlestep plan starts with one DDIM step. ε-prediction keeps the floor
  and warns: x̂0 = (x - σ ε̂)/α amplifies ε̂'s errors ~4096× (Lin et al. 2023 require
  v-prediction). The floored α has no useful derivative (2⁻¹² · ∞), so Euler / Heun take α', σ'
  at such a point from the floor's edge (the largest t with α above the floor): exact for flow
  (α' = -1 everywhere), O(2⁻¹²) off elsewhere.
* **Initial noise.** ``noise`` is x at t_start. :func:`init_noise_sigma` is its scale for a
  standard normal draw: 1 for VP (x_T ~ N(0, I), Ho et al.), σ(t_start) otherwise (EDM's σ_max;
  flow's 1), as diffusers' ``init_noise_sigma``.

Per-plan precomputation (issue 11; tests/test_sampler_precompute.py): everything but the tensors is
known once the plan is (sampler, grid, orders, options, process, the model's prediction): the walked
points' α, σ, λ, α', σ', each step's coefficients and each evaluation's conversion
(:meth:`~etsdm.denoiser.Denoiser.linear`: the network input scale and ε̂, x̂0 as linear maps of
(x, network output)) are Python floats computed once and kept with the step functions in a small
cache (:data:`PLAN_CACHE_SIZE` plans, per schedule object; schedules are treated as immutable). Each
:func:`sample` call then makes the network's conditions once, before its loop
(:meth:`~etsdm.denoiser.Denoiser.conditions`: one condition-map call on all distinct evaluation
times, one (batch,) tensor per time), and each step is its network call(s) plus its update as one
linear combination of tensors in the fewest fused kernels (:func:`_lin`): no schedule,
condition-map or ``torch.full`` call inside the loop, on every process and condition map, ancestral
noise and churn included. A Denoiser subclass that overrides how it evaluates (``estimate``,
``net_output``, ...) and any other model are called as before, ``estimate(x, t)`` / ``model(x, t)``
with a Python float t. Results equal the per-step formulas above to round-off.

Conditioning (issue 10): ``sample(..., cond={"labels": y, "lowres": lr})`` binds the network's
keyword inputs once per call and hands them to *every* evaluation, whatever the mode, sampler,
churn, clipping or exact α = 0 point: ``net(scale·x, c, **cond)`` on the precomputed path,
``estimate(x, t, **cond)`` / ``net_output(x, t, **cond)`` / ``model(x, t, **cond)`` otherwise. cond
is not part of the plan (the plan cache is shared by conditional and unconditional calls); with no
cond the calls are exactly the unconditional ones above. Classifier-free guidance is a network
(:class:`etsdm.guidance.GuidedNet`), so it runs on the precomputed path unchanged.

Replaying diffusers (tests/test_samplers.py, tests/test_samplers_processes.py): pass its
``timesteps`` (or, for σ-parametrised schedulers, its ``sigmas`` on EDM / flow) followed by its final
point (t = -1 / σ = 0 for the data, t = 0 for ``final_sigmas_type="sigma_min"``) as ``timesteps=``,
and its per-step orders as ``orders=`` (singlestep: [1, 2, 3] runs of its order_list become one step
of order 3). With our float64 table in the scheduler, DDIM, DDPM and DPM-Solver-2/3 ("midpoint")
agree to ~1e-10; DPM-Solver++(2M) to float32 precision (diffusers casts the sample to float32).

Layout: :mod:`.grids` (the walked points' α, σ, λ; time grids; Lu et al.'s order split),
:mod:`.steps` (one step builder per sampler: the formulas above, fused per plan), :mod:`.registry`
(name -> :class:`SamplerSpec`; :func:`plan`), :mod:`.run` (clipping, evaluation, the plan cache,
:func:`sample`, :func:`describe`).
"""

from __future__ import annotations

from .grids import (
    FLOAT_SPACINGS,
    INTEGER_SPACINGS,
    KARRAS_RHO,
    ORDER_PLANS,
    SPACINGS,
    OrderPlan,
    Spacing,
    default_spacing,
    init_noise_sigma,
    resolve_spacing,
    singlestep_orders,
    time_grid,
)
from .registry import (
    MAX_ORDER,
    SAMPLER_REGISTRY,
    SAMPLERS,
    SamplerName,
    SamplerSpec,
    default_denoise_to_zero,
    evaluation_times,
    plan,
)
from .run import (
    CLIPS,
    DYNAMIC_PERCENTILE,
    EXACT_ZERO_PREDICTIONS,
    PLAN_CACHE_SIZE,
    Clip,
    StepInfo,
    clip_x0,
    describe,
    sample,
)
from .steps import Churn, Intermediate

__all__ = [
    "CLIPS", "DYNAMIC_PERCENTILE", "EXACT_ZERO_PREDICTIONS", "FLOAT_SPACINGS", "INTEGER_SPACINGS", "KARRAS_RHO",
    "MAX_ORDER", "ORDER_PLANS", "PLAN_CACHE_SIZE", "SAMPLERS", "SAMPLER_REGISTRY", "SPACINGS", "Churn", "Clip",
    "Intermediate", "OrderPlan", "SamplerName", "SamplerSpec", "Spacing", "StepInfo", "clip_x0",
    "default_denoise_to_zero", "default_spacing", "describe", "evaluation_times", "init_noise_sigma", "plan",
    "resolve_spacing", "sample", "singlestep_orders", "time_grid",
]
