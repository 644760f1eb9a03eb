"""Trained digits, baseline vs E-TSDM over several training seeds, paired by seed.

Inputs: run folders ``RUNS/baseline-s{k}`` and ``RUNS/etsdm-s{k}`` (``etsdm train configs/digits_*.yaml
--set train.seed=k``); the two arms differ only in the condition map.

For every sampling plan (``sampler:nfe[:option=value,...]``, e.g. ``ddim:50`` or
``dpm-solver-3:20:timestep_spacing=fractional``) and training seed k, each arm draws a pool of
``--pool`` samples from the SAME initial noise (noise seed 1000 + k: paired across arms, new
across seeds). FID-n (n = ``--n`` < pool, digits feature space, reference = digits train split)
is averaged over ``--eval-seeds`` random subsets of the pool, giving one value per (arm, seed).
The real-vs-real floor is FID-n between held-out test images and the train split at the same n.

Each plan's effect is the mean paired difference E-TSDM − baseline with a Student-t 95% interval
over training seeds and the verdict rule of :mod:`etsdm.metrics.paired`. With ``--measure``,
the same is done for K(t, t+1) of Eq. (8) (mean and max over [0, t̃)) and for the x̂0 error
under perturbation at t = t̃ (Fig. 2).

Results: ``OUT/seeds.json`` (every per-seed number), ``OUT/seeds.md`` (tables), ``OUT/fid_seeds.png``.
Samples are cached in ``OUT/cache`` so a rerun or an added plan recomputes only what is missing.

Run (repository root): ``python experiments/digits_seeds.py --runs R --seeds 0 1 2 --out docs/results/digits``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from etsdm.analysis import lipschitz_curve
from etsdm.analysis.lipschitz import curve_summary, sharing_boundaries
from etsdm.analysis.stability import perturbation_error
from etsdm.metrics import SampleError, check_samples, fid_with_floor, summarize
from etsdm.metrics.features import digits_split, load_feature_net, save_feature_net, train_feature_net
from etsdm.metrics.paired import VERDICT_RULE, paired_difference, verdict
from etsdm.reproduce.runner import parse_plan as _parse_plan
from etsdm.reproduce.runner import slug as _slug
from etsdm.runs import generate, load_model

ARMS: tuple[str, ...] = ("baseline", "etsdm")
NOISE_SEED_OFFSET = 1000


def parse_plan(spec: str) -> tuple[str, int, dict[str, Any]]:
    """``"dpm-solver-3:20:timestep_spacing=fractional"`` → ("dpm-solver-3", 20, {...})
    (:func:`etsdm.reproduce.runner.parse_plan`, with a command-line error)."""
    try:
        return _parse_plan(spec)
    except ValueError as err:
        raise SystemExit(f"--plans: {err}") from None


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    path = runs / f"{arm}-s{seed}"
    if not (path / "config.yaml").is_file():
        raise SystemExit(f"missing run {path} (train it: etsdm train configs/digits_{arm}.yaml "
                         f"--set train.seed={seed} --out {path})")
    return path


def pooled_samples(runs: Path, arm: str, seed: int, spec: str, pool: int, cache: Path) -> torch.Tensor:
    """The cached pool of one (arm, seed, plan), drawn from noise seed 1000 + seed."""
    file = cache / f"{arm}-s{seed}" / f"{_slug(spec)}.npz"
    if file.is_file():
        return torch.from_numpy(np.load(file)["samples"])
    sampler, nfe, options = parse_plan(spec)
    model = load_model(run_dir(runs, arm, seed))
    x = generate(model, pool, sampler=sampler, nfe=nfe, seed=NOISE_SEED_OFFSET + seed, batch=pool, **options)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, samples=x.numpy(), plan=spec, noise_seed=NOISE_SEED_OFFSET + seed)
    tmp.replace(file)
    return x


def feature_net(cache: Path) -> torch.nn.Module:
    file = cache / "digits_features.safetensors"
    if not file.is_file():
        net, report = train_feature_net()
        cache.mkdir(parents=True, exist_ok=True)
        save_feature_net(net, file, report)
    return load_feature_net(file)[0]


def fid_table(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Per plan: FID-n per (arm, seed), the floor, the paired difference and its verdict."""
    net = feature_net(cache)
    train, test = digits_split("train")[0], digits_split("test")[0]
    eval_seeds = list(range(args.eval_seeds))
    out: dict[str, Any] = {}
    for spec in args.plans:
        t0 = time.time()
        per_arm: dict[str, list[float]] = {arm: [] for arm in ARMS}
        floors: list[float] = []
        pools: list[int] = []
        failed: list[str] = []
        for seed in args.seeds:
            for arm in ARMS:
                try:  # NaN / inf / far out of range: no FID (a failure of the arm); slight overshoot clamped
                    x = check_samples(pooled_samples(args.runs, arm, seed, spec, args.pool, cache),
                                      what=f"{arm} seed {seed} {spec} samples")[0]
                except SampleError as err:
                    failed.append(f"{arm} seed {seed}: {err}")
                    continue
                pools.append(int(x.shape[0]))
                res = fid_with_floor(x, train, test, net, n=args.n, seeds=eval_seeds)
                per_arm[arm].append(res["fid"])
                floors.append(res["floor"])
        if failed:  # reported as a failed row, never dropped from the paired statistics silently
            out[spec] = {"verdict": "failed", "failed": failed}
            print(f"{spec}: failed: " + "; ".join(failed), flush=True)
            continue
        diff = paired_difference(per_arm["baseline"], per_arm["etsdm"])
        out[spec] = {
            **{arm: summarize("fid", vals) for arm, vals in per_arm.items()},
            "floor": float(np.mean(floors)),
            "pool": min(pools),  # a cached pool keeps the size it was drawn with
            "difference": diff.to_dict(),
            "verdict": verdict(diff, "lower"),
        }
        print(f"{spec}: baseline {np.mean(per_arm['baseline']):.3f}  E-TSDM {np.mean(per_arm['etsdm']):.3f}  "
              f"diff {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]  ({time.time() - t0:.0f} s)", flush=True)
    return out


def measure_run(path: Path, x0: torch.Tensor, seed: int, t_tilde: float) -> dict[str, Any]:
    """K(t, t+1) over t in [0, t̃) (Eq. 8; network output, per step) and the x̂0 error under
    perturbation at t̃ (Fig. 2; per-pixel MSE), with forward noise from ``seed`` (paired across arms)."""
    model = load_model(path)
    times = torch.arange(0, int(t_tilde), dtype=torch.float64)
    gen = torch.Generator().manual_seed(NOISE_SEED_OFFSET + seed)
    curve = lipschitz_curve(model.denoiser, x0, model.schedule, times, generator=gen)
    summary = curve_summary(curve.t, curve.K, curve.dt, t_tilde, sharing_boundaries(model.denoiser.condition))
    gen = torch.Generator().manual_seed(NOISE_SEED_OFFSET + seed)
    stab = perturbation_error(model.denoiser, x0, model.schedule, t=t_tilde, generator=gen)
    return {"K_mean": summary["mean"], "K_max": summary["max"], "K": curve.K.tolist(), "K_unit": curve.unit,
            "K_output": curve.output, "stability_scales": stab.scales, "stability_error": stab.error.tolist(),
            "stability_metric": stab.metric}


def measure_table(args: argparse.Namespace) -> dict[str, Any]:
    """Per quantity (K mean/max over [0, t̃), x̂0 error per perturbation scale): per-seed values,
    paired difference and verdict (the paper reports lower values for E-TSDM for all of them)."""
    x0 = digits_split("test")[0][: args.measure_samples]
    per_run = {arm: [measure_run(run_dir(args.runs, arm, s), x0, s, args.t_tilde) for s in args.seeds]
               for arm in ARMS}
    quantities = {"K mean over [0, t̃)": lambda r: r["K_mean"], "K max over [0, t̃)": lambda r: r["K_max"]}
    for i, scale in enumerate(per_run["baseline"][0]["stability_scales"]):
        quantities[f"x̂0 MSE, s = {scale:g}"] = lambda r, i=i: r["stability_error"][i]
    table = {}
    for name, get in quantities.items():
        vals = {arm: [get(r) for r in per_run[arm]] for arm in ARMS}
        diff = paired_difference(vals["baseline"], vals["etsdm"])
        table[name] = {**{arm: summarize("value", v) for arm, v in vals.items()},
                       "difference": diff.to_dict(), "verdict": verdict(diff, "lower")}
        print(f"{name}: diff {diff.mean:+.4g} [{diff.low:+.4g}, {diff.high:+.4g}]", flush=True)
    return {"per_run": per_run, "table": table, "n_samples": int(x0.shape[0]), "t_tilde": args.t_tilde}


def _pm(summary: dict, key: str) -> str:
    return f"{summary[key]:.2f} ± {summary[f'{key}_std']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    cfg = results["settings"]
    lines = [
        f"FID-{cfg['n']} (digits feature space; reference: digits train split), mean ± std over "
        f"{len(cfg['seeds'])} training seeds {cfg['seeds']}; each value is the mean over {cfg['eval_seeds']} "
        f"random subsets of the plan's pool of samples; noise seed 1000 + k shared by both arms of seed k.",
        "",
        "| plan | pool | baseline | E-TSDM | E-TSDM − baseline (95% t-interval) | verdict | floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, row in results["fid"].items():
        if "failed" in row:  # a diverged run (fid_table)
            lines.append(f"| `{spec}` | | | | diverged: {'; '.join(row['failed'])} | failed | |")
            continue
        d = row["difference"]
        lines.append(
            f"| `{spec}` | {row['pool']} | {_pm(row['baseline'], 'fid')} | {_pm(row['etsdm'], 'fid')} | "
            f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] | {row['verdict']} | {row['floor']:.2f} |"
        )
    lines += ["", f"Verdict rule (paper direction: lower FID for E-TSDM): {VERDICT_RULE}.", ""]
    if "measure" in results:
        m = results["measure"]
        lines += [
            f"K(t, t+1) of Eq. (8) over t = 0..{int(m['t_tilde']) - 1} (network output, per step) and the x̂0 "
            f"error under x_t̃ + N(0, s² I) at t̃ = {m['t_tilde']:g} (per-pixel MSE), {m['n_samples']} test "
            f"images, forward noise paired across arms; mean ± std over training seeds.",
            "",
            "| quantity | baseline | E-TSDM | E-TSDM − baseline (95% t-interval) | verdict |",
            "|---|---|---|---|---|",
        ]
        for name, row in m["table"].items():
            d = row["difference"]
            lines.append(f"| {name} | {_pm4(row['baseline'])} | {_pm4(row['etsdm'])} | "
                         f"{d['mean']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}] | {row['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def _pm4(summary: dict) -> str:
    return f"{summary['value']:.4g} ± {summary['value_std']:.2g}"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = [spec for spec, row in results["fid"].items() if "failed" not in row]  # failed rows: in the table
    fig, ax = plt.subplots(figsize=(1.1 * len(specs) + 2, 4.2))
    for i, spec in enumerate(specs):
        row = results["fid"][spec]
        base, ets = row["baseline"]["fid_values"], row["etsdm"]["fid_values"]
        for b, e in zip(base, ets, strict=True):
            ax.plot([i - 0.15, i + 0.15], [b, e], color="0.75", lw=0.8, zorder=1)
        ax.scatter([i - 0.15] * len(base), base, color="tab:blue", s=14, zorder=2, label="baseline" if i == 0 else None)
        ax.scatter([i + 0.15] * len(ets), ets, color="tab:red", s=14, zorder=2, label="E-TSDM" if i == 0 else None)
        floor_label = "real-vs-real floor" if i == 0 else None
        ax.hlines(row["floor"], i - 0.3, i + 0.3, color="k", lw=1, ls=":", label=floor_label)
    labels = [spec.replace(":timestep_spacing=", " ") for spec in specs]
    ax.set_xticks(range(len(specs)), labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel(f"FID-{results['settings']['n']} (digits features)")
    ax.set_title("per training seed; grey lines pair the two arms of one seed", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_k(results: dict[str, Any], path: Path) -> None:
    """K(t, t+1) over [0, t̃): mean over training seeds with a ±1 std band, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, color, label in (("baseline", "tab:blue", "baseline"), ("etsdm", "tab:red", "E-TSDM")):
        K = np.array([r["K"] for r in results["measure"]["per_run"][arm]])
        t = np.arange(K.shape[1])
        mean, std = K.mean(0), K.std(0, ddof=1) if K.shape[0] > 1 else np.zeros(K.shape[1])
        ax.plot(t, mean, color=color, lw=1, label=f"{label} (mean of {K.shape[0]} seeds)")
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.25, lw=0)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("t (K between t and t + 1)")
    ax.set_ylabel("K(t, t+1), network output")
    ax.set_title("Eq. (8) on trained digits; band: ±1 std over training seeds", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, required=True, help="folder holding baseline-s{k}/ and etsdm-s{k}/")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds k (≥ 2)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plans", nargs="+", default=["ddpm:1000", "ddim:50", "dpm-solver-3:20"],
                   help="sampler:nfe[:option=value,...], options passed to etsdm.sample")
    p.add_argument("--pool", type=int, default=500, help="samples per (arm, seed, plan)")
    p.add_argument("--n", type=int, default=250, help="FID-n: images per subset (< pool, ≤ 300 held-out)")
    p.add_argument("--eval-seeds", type=int, default=3, help="random subsets per FID value")
    p.add_argument("--measure", action="store_true", help="also K(t, t+1) over [0, t̃) and stability at t̃")
    p.add_argument("--measure-samples", type=int, default=100, help="test images for --measure")
    p.add_argument("--t-tilde", type=float, default=100.0, help="t̃ for --measure (the runs' t̃)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if len(args.seeds) < 2:
        p.error("--seeds: a paired interval needs at least 2 training seeds")
    if not 2 <= args.n < args.pool:
        p.error(f"--n must be in [2, pool) = [2, {args.pool}), got {args.n}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results: dict[str, Any] = {"settings": settings, "fid": fid_table(args, cache)}
    if args.measure:
        results["measure"] = measure_table(args)
    (args.out / "seeds.json").write_text(json.dumps(results, indent=1))
    (args.out / "seeds.md").write_text(markdown(results))
    plot(results, args.out / "fid_seeds.png")
    if "measure" in results:
        plot_k(results, args.out / "lipschitz_seeds.png")
    return results


if __name__ == "__main__":
    main()
