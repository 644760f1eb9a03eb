"""The paper's claims that ``etsdm reproduce`` re-tests, each with the runs it needs and its verdict rows.

A claim is a set of *arms* (a training setting: overrides on the digits baseline config, and the
paper config it stands for at full scale) and *rows*. A row compares one measurement of two arms
(or two measurements of one arm) seed by seed: the effect is ``b − a`` (paired by training seed,
sampling / forward noise shared), its paper direction is "lower" or "higher", and the paper's
numbers for it stand beside it (from /work/shared/paper/numbers.md, i.e. the paper's tables).

Measurement keys (per run; :mod:`.runner` computes them):

* ``fid:<plan>`` — FID-n of samples drawn with ``<plan>`` (``sampler:nfe[:option=value,...]``;
  ``ddpm:T`` is the paper's sampler, NFE = T, spelled ``ddpm:T`` here and resolved per budget).
* ``K_mean`` / ``K_max`` — K(t, t+1) of Eq. (8) over [0, t̃), mean and max (the max off E-TSDM's
  sub-interval boundaries); ``K_boundary`` — mean K at the steps that cross a boundary of the
  default sharing (t̃ = 100, n = 5: t = 19, 39, 59, 79), ``K_early`` / ``K_late`` — mean K over the
  first / last tenth of [0, t̃).
* ``stab:<s>`` — per-pixel MSE of x̂0 at t = t̃ under x_t̃ + N(0, s² I) (Fig. 2).
* ``psnr:<plan>`` / ``ssim:<plan>`` — super-resolution runs: mean PSNR (dB) / SSIM over the held-out
  test pairs of one output per low-resolution input drawn with ``<plan>`` (Fig. A12).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["lower", "higher"]
Family = Literal["main", "sweep"]

# Fast-sampler plans of Table 3 (sampler, NFE) and the two grid conventions measured for each.
TABLE3 = (("ddim", 50), ("ddim", 200), ("dpm-solver-2", 20), ("dpm-solver-2", 50), ("dpm-solver-3", 20),
          ("dpm-solver-3", 50))
TABLE3_PAPER = {("dpm-solver-3", 20): "21.91 / 16.97", ("dpm-solver-3", 50): "24.48 / 13.52",
                ("dpm-solver-2", 20): "22.21 / 17.28", ("dpm-solver-2", 50): "24.80 / 14.14",
                ("ddim", 50): "21.80 / 19.34", ("ddim", 200): "23.16 / 13.71"}
CONVENTIONS = {"integer": "", "fractional": ":timestep_spacing=fractional"}  # trained timesteps | official dpm-solver
STAB_SCALES = (0.05, 0.1, 0.2, 0.3)  # etsdm.analysis.stability.DEFAULT_SCALES
FIG2_PAPER = ("0.0049 / 0.0048", "0.026 / 0.021", "0.090 / 0.063", "0.175 / 0.124")
DDPM = "ddpm:T"  # the paper's sampler: ancestral DDPM with NFE = T (resolved per budget)


@dataclass(frozen=True)
class Arm:
    """One training setting: ``overrides`` (``--set`` items) on the digits baseline config, the
    family whose budget (steps, seeds, sizes) it trains with, and the paper config it stands for."""

    name: str
    overrides: tuple[str, ...]
    paper_config: str
    label: str = ""


@dataclass(frozen=True)
class Row:
    """One verdict row: measurement ``b_metric`` of arm ``b`` minus ``a_metric`` of arm ``a``."""

    label: str
    a: str
    b: str
    metric: str
    direction: Direction
    paper: str
    b_metric: str | None = None  # default: the same measurement as ``a``
    primary: bool = True  # counts for the claim's verdict
    note: str = ""

    @property
    def metric_b(self) -> str:
        return self.b_metric or self.metric


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and how it is re-tested."""

    id: str
    title: str
    paper_ref: str
    paper_numbers: str
    family: Family
    arms: tuple[Arm, ...]
    rows: tuple[Row, ...]
    measures: tuple[str, ...] = ()  # "lipschitz", "stability"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def metrics_of(self, arm: str, rows: tuple[Row, ...] | None = None) -> list[str]:
        """The measurements the given rows (default: all) need from ``arm``."""
        out: list[str] = []
        for r in rows if rows is not None else self.rows:
            for name, metric in ((r.a, r.metric), (r.b, r.metric_b)):
                if name == arm and metric not in out:
                    out.append(metric)
        return out


def _cond(kind: str, **kw: object) -> tuple[str, ...]:
    items = [f"diffusion.condition.kind={kind}"]
    items += [f"diffusion.condition.{k}={v}" for k, v in kw.items()]
    return tuple(items)


BASELINE = Arm("baseline", _cond("identity"), "configs/paper/ffhq_baseline.yaml", "baseline (DDPM)")
ETSDM = Arm("etsdm", _cond("etsdm", t_tilde="null", n=5), "configs/paper/ffhq_etsdm.yaml", "E-TSDM (t̃ = 100, n = 5)")

SCHEDULES = ("linear", "quadratic", "cosine", "cosine-shift", "zero-snr")
TABLE2_PAPER = {
    ("linear", False): "9.50 / 6.62", ("quadratic", False): "13.79 / 9.69", ("cosine", False): "27.17 / 26.08",
    ("cosine-shift", False): "14.51 / 11.20", ("zero-snr", False): "11.66 / 8.58",
    ("linear", True): "9.53 / 6.95", ("quadratic", True): "14.26 / 9.66", ("cosine", True): "25.65 / 16.80",
    ("cosine-shift", True): "12.80 / 9.94", ("zero-snr", True): "10.89 / 8.96",
}


def schedule_arm(name: str, continuous: bool, etsdm: bool) -> Arm:
    """An arm of Table 2 (the linear discrete pair is the plain baseline / E-TSDM)."""
    if name == "linear" and not continuous:
        return ETSDM if etsdm else BASELINE
    kind = "continuous" if continuous else "discrete"
    arm = "etsdm" if etsdm else "baseline"
    sets = (f"schedule.name={name}", f"schedule.continuous={str(continuous).lower()}")
    if name == "zero-snr":
        sets += ("diffusion.prediction=v",)  # as the paper configs: Lin et al. need v with zero terminal SNR
    base = ETSDM if etsdm else BASELINE
    return Arm(f"{name}-{kind}-{arm}", base.overrides + sets,
               f"configs/paper/schedules/ffhq_{name}_{kind}_{arm}.yaml", f"{name}, {kind}, {arm}")


def _claim1() -> Claim:
    rows = (
        Row("K mean over [0, t̃)", "baseline", "etsdm", "K_mean", "lower", "Fig. 1b: lower (curve only)"),
        Row("K max over [0, t̃) (off E-TSDM boundaries)", "baseline", "etsdm", "K_max", "lower",
            "Fig. 1b: lower (curve only)"),
        Row("K at the sub-interval boundaries (t = 19, 39, 59, 79)", "baseline", "etsdm", "K_boundary", "lower",
            "Fig. A1 (curve only)", primary=False,
            note="E-TSDM changes its condition there, so its K jumps; the paper's claim is about the rest of [0, t̃)"),
        Row("baseline: K near t = 0 vs near t̃ (first − last tenth of [0, t̃))", "baseline", "baseline", "K_late",
            "higher", "Fig. 1b: K grows towards t = 0", b_metric="K_early"),
    )
    return Claim("1", "The baseline's K(t, t′) grows towards t = 0; E-TSDM lowers it on [0, t̃)", "Fig. 1b / Fig. A1",
                 "curves only (no table); K of the ε-network per step", "main", (BASELINE, ETSDM), rows,
                 measures=("lipschitz",),
                 notes=("K of the network's own output (ε) with the same x_t at t and t + 1: E-TSDM's condition is "
                        "constant inside each sub-interval, so its K there is exactly 0 by construction; its mean "
                        "over [0, t̃) is the boundary jumps averaged over the t̃ steps",))


def _claim2() -> Claim:
    rows = tuple(Row(f"x̂0 MSE, s = {s:g}", "baseline", "etsdm", f"stab:{s:g}", "lower", p)
                 for s, p in zip(STAB_SCALES, FIG2_PAPER, strict=True))
    return Claim("2", "E-TSDM's x̂0 is more stable under perturbation of x_t at t = t̃", "Fig. 2",
                 "baseline / E-TSDM: " + ", ".join(FIG2_PAPER), "main", (BASELINE, ETSDM), rows,
                 measures=("stability",),
                 notes=("the paper's four scales are read off its axis; we use s = 0.05, 0.1, 0.2, 0.3",))


def _claim3() -> Claim:
    rows = (Row("FID, DDPM (NFE = T)", "baseline", "etsdm", f"fid:{DDPM}", "lower",
                "FFHQ 9.50 / 6.62 (Fig. 4; five more data sets all lower)"),)
    return Claim("3", "Better sample quality with the paper's sampler (DDPM, NFE = T)", "Table 1 / Fig. 4",
                 "FID-10k DDPM → E-TSDM: FFHQ 9.50 → 6.62, AFHQ-Cat 7.19 → 6.63, AFHQ-Wild 9.64 → 7.34, "
                 "CelebA-HQ 8.05 → 6.99, LSUN-Church 7.01 → 6.72, LSUN-Cat 14.69 → 11.98", "main",
                 (BASELINE, ETSDM), rows)


def plan(sampler: str, nfe: int, convention: str) -> str:
    return f"{sampler}:{nfe}{CONVENTIONS[convention]}"


def _claim5() -> Claim:
    rows = tuple(Row(f"{s} {nfe} ({conv} grid)", "baseline", "etsdm", f"fid:{plan(s, nfe, conv)}", "lower",
                     TABLE3_PAPER[(s, nfe)]) for conv in CONVENTIONS for s, nfe in TABLE3)
    return Claim("5", "E-TSDM is better with fast samplers (DDIM 50/200, DPM-Solver-2/3 20/50)", "Table 3",
                 "FFHQ FID-10k baseline / E-TSDM per sampler and NFE (see rows)", "main", (BASELINE, ETSDM), rows,
                 notes=("integer grid: the trained timesteps (diffusers' linspace rounding, etsdm's default); "
                        "fractional: uniform float times between them (the official dpm-solver code)",))


def _claim5b() -> Claim:
    pairs = (("ddim", 50, 200, "21.80 → 23.16"), ("dpm-solver-2", 20, 50, "22.21 → 24.80"),
             ("dpm-solver-3", 20, 50, "21.91 → 24.48"))
    rows = []
    for conv in CONVENTIONS:
        for s, lo, hi, paper in pairs:
            rows.append(Row(f"baseline {s}: NFE {hi} − NFE {lo} ({conv} grid)", "baseline", "baseline",
                            f"fid:{plan(s, lo, conv)}", "higher", paper, b_metric=f"fid:{plan(s, hi, conv)}"))
    return Claim("5b", "The baseline gets worse as NFE grows (E-TSDM does not)", "Table 3",
                 "baseline FID-10k: DDIM 21.80 → 23.16, DPM-Solver-2 22.21 → 24.80, DPM-Solver-3 21.91 → 24.48",
                 "main", (BASELINE,), tuple(rows))


def _claim4() -> Claim:
    arms, rows = [], []
    for continuous in (False, True):
        for name in SCHEDULES:
            a, b = schedule_arm(name, continuous, False), schedule_arm(name, continuous, True)
            arms += [a, b]
            kind = "continuous" if continuous else "discrete"
            rows.append(Row(f"{name}, {kind}", a.name, b.name, f"fid:{DDPM}", "lower",
                            TABLE2_PAPER[(name, continuous)]))
    return Claim("4", "E-TSDM is better across the five noise schedules, discrete and continuous", "Table 2",
                 "FFHQ FID-10k baseline / E-TSDM (see rows)", "sweep", tuple(arms), tuple(rows),
                 notes=("cosine-shift keeps the paper's shift (resolution 256, base 64); zero-SNR uses "
                        "v-prediction as the paper configs do",))


# Fig. 5: (t̃, n) with t̃/n ≈ 20, and n with t̃ = 100; paper FFHQ FID-10k.
FIG5_TTILDE = ((20, 1, "6.85"), (150, 8, "6.91"), (200, 10, "6.77"), (250, 13, "7.01"), (300, 15, "7.09"))
FIG5_N = ((1, "6.89"), (2, "6.99"), (10, "6.85"), (20, "6.75"), (50, "6.85"), (100, "9.50"))


def ablation_arm(t_tilde: int, n: int) -> Arm:
    if (t_tilde, n) == (100, 5):
        return ETSDM
    return Arm(f"etsdm-t{t_tilde}-n{n}", _cond("etsdm", t_tilde=t_tilde, n=n),
               f"configs/paper/ablations/ffhq_etsdm_t{t_tilde}-n{n}.yaml", f"E-TSDM t̃ = {t_tilde}, n = {n}")


def _claim6() -> Claim:
    arms, rows = [BASELINE, ETSDM], [Row("t̃ = 100, n = 5", "baseline", "etsdm", f"fid:{DDPM}", "lower", "6.67")]
    for t, n, paper in FIG5_TTILDE:
        arm = ablation_arm(t, n)
        arms.append(arm)
        rows.append(Row(f"t̃ = {t}, n = {n}", "baseline", arm.name, f"fid:{DDPM}", "lower", f"9.50 → {paper}"))
    for n, paper in FIG5_N:
        arm = ablation_arm(100, n)
        arms.append(arm)
        same = n == 100  # 100 sub-intervals of one step each: no sharing, the baseline itself
        rows.append(Row(f"t̃ = 100, n = {n}", "baseline", arm.name, f"fid:{DDPM}", "lower", f"9.50 → {paper}",
                        primary=not same, note="n = t̃: every sub-interval is one step, i.e. the baseline" if same
                        else ""))
    return Claim("6", "E-TSDM helps over a wide range of t̃ and n (Fig. 5 ablations)", "Fig. 5",
                 "FFHQ FID-10k, t̃ ∈ {0, 20, 100, 150, 200, 250, 300}: 9.50, 6.85, 6.67, 6.91, 6.77, 7.01, 7.09; "
                 "n ∈ {1, 2, 5, 10, 20, 50, 100}: 6.89, 6.99, 6.67, 6.85, 6.75, 6.85, 9.50", "sweep",
                 tuple(arms), tuple(rows))


def _claim7() -> Claim:
    a = Arm("v-baseline", BASELINE.overrides + ("diffusion.prediction=v",),
            "configs/paper/v-prediction/ffhq_v_baseline.yaml", "baseline, v-prediction")
    b = Arm("v-etsdm", ETSDM.overrides + ("diffusion.prediction=v",),
            "configs/paper/v-prediction/ffhq_v_etsdm.yaml", "E-TSDM, v-prediction")
    rows = (Row("v-prediction, DDPM", a.name, b.name, f"fid:{DDPM}", "lower", "FFHQ 10.85 / 9.00"),)
    return Claim("7", "E-TSDM also helps a v-prediction model", "Table A2",
                 "FID-10k baseline / E-TSDM: FFHQ 10.85 / 9.00, LSUN-Cat 18.40 / 13.86", "sweep", (a, b), rows)


# DDPM-r's weight: the paper configs use 1e-4 for 3x256x256 images (K is a norm over all pixels, the
# MSE a mean); K of an 8x8 digit is ~sqrt(196608 / 64) ≈ 55x smaller, so the toy weight is 55x larger.
DDPM_R_WEIGHT = 5.5e-3
REMAP_PAPER = {("t", "t"): ("9.43", "9.33"), ("t", "lambda"): ("83.71", "468.90"),
               ("lambda", "t"): ("83.44", "468.19"), ("lambda", "lambda"): ("171.06", "351.89")}


def _claim8() -> Claim:
    ddpm_r = Arm("ddpm-r", BASELINE.overrides + (f"diffusion.reg_weight={DDPM_R_WEIGHT}",),
                 "configs/paper/alternatives/ffhq_ddpm-r.yaml", "DDPM-r")
    arms: list[Arm] = [BASELINE, ETSDM, ddpm_r]
    rows = [Row("E-TSDM − DDPM-r", ddpm_r.name, "etsdm", f"fid:{DDPM}", "lower", "9.18 / 6.62"),
            Row("DDPM-r − baseline", "baseline", ddpm_r.name, f"fid:{DDPM}", "lower", "9.50 / 9.18", primary=False)]
    ns_paper = {"linear": "8.67 / 6.62", "quadratic": "17.48 / 9.69", "cosine": "26.84 / 26.08"}
    for name, paper in ns_paper.items():
        arm = Arm(f"modified-ns-{name}", _cond("identity") + (f"schedule.name={name}", "schedule.modified=true"),
                  f"configs/paper/alternatives/ffhq_modified-ns_{name}.yaml", f"Modified-NS ({name})")
        ets = schedule_arm(name, False, True)
        arms += [arm] + ([ets] if ets not in arms else [])
        rows.append(Row(f"E-TSDM − Modified-NS ({name})", arm.name, ets.name, f"fid:{DDPM}", "lower", paper))
    for remap, label in (("inverse", "1/t"), ("inverse-sigmoid", "inverse sigmoid")):
        for train, infer in REMAP_PAPER:
            sampling = "remap-lambda" if train == "lambda" else "uniform"
            arm = Arm(f"remap-{remap}-train-{train}-infer-{infer}",
                      _cond("remap", remap=remap, remap_grid=infer) + (f"diffusion.time_sampling={sampling}",),
                      f"configs/paper/alternatives/ffhq_remap-{remap}_train-{train}_infer-{infer}.yaml",
                      f"remap {label}, train {train}, infer {infer}")
            arms.append(arm)
            paper = REMAP_PAPER[(train, infer)][0 if remap == "inverse" else 1]
            rows.append(Row(f"E-TSDM − remap {label} (train {train}, infer {infer})", arm.name, "etsdm",
                            f"fid:{DDPM}", "lower", f"{paper} / 6.62"))
    return Claim("8", "E-TSDM beats the alternatives: DDPM-r, Modified-NS, remap", "Tables A3-A5",
                 "FFHQ FID-10k: DDPM-r 9.18, Modified-NS 8.67 / 17.48 / 26.84 (linear / quadratic / cosine), "
                 "remap 9.33-468.90, E-TSDM 6.62 (quadratic 9.69, cosine 26.08)", "sweep", tuple(arms), tuple(rows),
                 notes=(f"DDPM-r weight {DDPM_R_WEIGHT:g} on digits (the paper does not state it; the paper config's "
                        "1e-4 scaled by the image size)",))


# Beyond VP (issue 9): the processes' own objectives and samplers (configs/{edm,flow}_digits_*.yaml).
EDM_SETS = ("schedule.name=edm", "schedule.continuous=true", "diffusion.prediction=edm", "diffusion.sigma_data=0.75",
            "diffusion.time_sampling=log-normal")
FLOW_SETS = ("schedule.name=flow", "schedule.continuous=true", "diffusion.prediction=flow",
             "diffusion.time_sampling=uniform")


PROCESS_PAPER_CONFIGS = {"edm": "configs/paper/edm_cifar10_{}.yaml", "flow": "configs/paper/flow_ffhq256_{}.yaml"}


def _process_claim(cid: str, process: str, sets: tuple[str, ...], plans: tuple[tuple[str, bool], ...],
                   title: str, paper_ref: str, paper: str, note: str) -> Claim:
    paper_config = PROCESS_PAPER_CONFIGS[process]
    a = Arm(f"{process}-baseline", _cond("identity") + sets, paper_config.format("baseline"), f"{process}, baseline")
    b = Arm(f"{process}-etsdm", ETSDM.overrides + sets, paper_config.format("etsdm"),
            f"{process}, E-TSDM (default band and space)")
    rows = tuple(Row(f"FID, {p.split(':')[0]} (NFE {p.split(':')[1]})", a.name, b.name, f"fid:{p}", "lower",
                     paper if primary else "", primary=primary) for p, primary in plans)
    return Claim(cid, title, paper_ref, paper, "sweep", (a, b), rows, notes=(note,))


def _claim9() -> Claim:
    return _process_claim(
        "9", "edm", EDM_SETS, (("heun:35", True), ("dpm-solver++2m:20", False)),
        "E-TSDM also helps EDM (Karras et al. 2022)", "Appendix D.4",
        "CIFAR-10 FID-50k EDM / E-TSDM: 1.904 ± 0.015 / 1.797 ± 0.016 (3 runs)",
        "EDM's preconditioning and log-normal σ training, σ_data = 0.75 (the digits' std); Heun on the ρ = 7 "
        "grid (18 steps = 35 NFE, EDM's deterministic sampler); E-TSDM: 5 sub-intervals uniform in ln σ "
        "(c_noise) on [0.002, 0.342) (etsdm.conditioning: the paper does not say how it shared EDM's time)")


def _claim10() -> Claim:
    return _process_claim(
        "10", "flow", FLOW_SETS, (("euler:50", True), ("heun:35", False)),
        "E-TSDM on flow matching (not in the paper: a new test)", "— (issue 9)",
        "none: the paper has no flow-matching experiment",
        "rectified flow x_t = (1 - t) x0 + t ε, velocity prediction, uniform t; Euler, 50 steps uniform in t; "
        "E-TSDM: 5 sub-intervals uniform in t on [0, 0.255) (the paper's band end by equal log-SNR)")


LDM_AUTOENCODER = "ae_digits.yaml"  # beside the packaged digits configs: trained once, cached (etsdm.latent)
LDM_SETS = (f"latent.autoencoder={LDM_AUTOENCODER}", "schedule.name=quadratic", "schedule.beta_min=1.5",
            "schedule.beta_max=19.5", "model.overrides.attention_resolutions=[2]")  # = configs/ldm_digits_*.yaml


def _claim11() -> Claim:
    a = Arm("ldm-baseline", _cond("identity") + LDM_SETS, "configs/paper/ldm/ldm_ffhq_baseline.yaml", "LDM, baseline")
    b = Arm("ldm-etsdm", _cond("etsdm", t_tilde="null", n=20) + LDM_SETS, "configs/paper/ldm/ldm_ffhq_etsdm.yaml",
            "LDM, E-TSDM (t̃ = 100, n = 20)")
    rows = (Row("FID, ddpm (NFE T), decoded", a.name, b.name, f"fid:{DDPM}", "lower", "FFHQ FID-50k 4.98 / 4.61"),
            Row("FID, ddim (NFE 50), decoded", a.name, b.name, "fid:ddim:50", "lower", "", primary=False),
            Row("K mean over [0, t̃) in latent space", a.name, b.name, "K_mean", "lower",
                "Fig. A10: lower (curve only)"))
    return Claim("11", "E-TSDM on latent diffusion (LDM, n = 20)", "Appendix D.4 / Fig. A10",
                 "LDM FFHQ 256 FID-50k 4.98 → 4.61 with n = 20; K curves in latent space (Fig. A10)", "sweep", (a, b),
                 rows, measures=("lipschitz",),
                 notes=("a diffusers AutoencoderKL trained on the digits (configs/ae_digits.yaml: 8x8 -> 2x4x4 "
                        "latents, f = 2) encodes the data once (cached); LDM's quadratic betas 0.0015..0.0195; "
                        "E-TSDM with n = 20 as the paper; FID on decoded samples; K(t, t+1) of the ε-network on "
                        "encoded test images (latent space, as Fig. A10)",))


SR_SETS = ("data.name=sr", "data.sr_base=digits", "data.sr_factor=2")  # = configs/sr_digits_*.yaml (4x4 -> 8x8)


def _claim12() -> Claim:
    a = Arm("sr-baseline", _cond("identity") + SR_SETS, "configs/paper/super-resolution/ffhq_sr64-256_baseline.yaml",
            "SR, baseline")
    b = Arm("sr-etsdm", ETSDM.overrides + SR_SETS, "configs/paper/super-resolution/ffhq_sr64-256_etsdm.yaml",
            "SR, E-TSDM (t̃ = 100, n = 5)")
    rows = (Row("PSNR (dB), ddpm (NFE T)", a.name, b.name, f"psnr:{DDPM}", "higher", "FFHQ 64→256: 24.64 / 25.61"),
            Row("PSNR (dB), ddim (NFE 50)", a.name, b.name, "psnr:ddim:50", "higher", "", primary=False),
            Row("SSIM, ddpm (NFE T)", a.name, b.name, f"ssim:{DDPM}", "higher", "", primary=False))
    return Claim("12", "E-TSDM on super-resolution (conditional generation)", "Fig. A12",
                 "FFHQ 64 → 256 PSNR 24.64 → 25.61 (one number each)", "sweep", (a, b), rows,
                 notes=("4x4 -> 8x8 digits (area-downsampled by 2; the UNet sees the bicubic-upsampled input as extra "
                        "channels); one output per held-out test pair (the first pool-size pairs), sampling noise "
                        "paired across arms; PSNR and SSIM per image on [0, 1], mean over images",))


def all_claims() -> dict[str, Claim]:
    """The registry, in report order."""
    claims = (_claim1(), _claim2(), _claim3(), _claim4(), _claim5(), _claim5b(), _claim6(), _claim7(), _claim8(),
              _claim9(), _claim10(), _claim11(), _claim12())
    return {c.id: c for c in claims}


CLAIMS = all_claims()
CLAIM_IDS = tuple(CLAIMS)
