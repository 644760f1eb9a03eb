"""Measuring commands: lipschitz | stability | schedules | evaluate | features.

Each writes a JSON file with every number and a PNG figure into ``--out`` (a folder), and
prints a short table. RUN arguments are anything ``etsdm.runs.load_model`` accepts (a run
folder, a diffusers folder) or an analytic spec: ``gmm`` (exact ε*), ``gmm:etsdm`` (exact E-TSDM
optimum), ``gmm:etsdm-uniform`` (Eq. A15 weighting), and each with ``:continuous`` (continuous-time
linear VP), ``:edm`` or ``:flow`` (``etsdm.analysis.specs``) — these need no training, and are all
``etsdm.analytic.exact_denoiser``.

Conditional runs are measured with each x0's own condition (a super-resolution run's
low-resolution input, a class-conditional run's label; ``--guidance`` for the guided output), latent
runs in latent space (``etsdm.analysis.specs.data_batch``); ``evaluate`` also takes a PNG folder or
a RUN (sampled now) and paired ``--targets`` for PSNR / SSIM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

# = etsdm.metrics.evaluate.METRICS (kept here so that `etsdm --help` does not import scipy)
METRICS = ("fid-digits", "fid-own", "fid-inception", "gmm", "psnr", "ssim")

SEEDS_HELP = "comma-separated seeds; every number is reported as mean ± std over them"
GUIDANCE_HELP = ("class-conditional RUNs: classifier-free guidance scale s of the measured output, ε_u + s(ε_c − ε_u) "
                 "(default: 1, the conditional network itself)")


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(value).split(",") if s.strip()]
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from err
    if not seeds:
        raise click.BadParameter("give at least one seed")
    return seeds


def _floats(value: str, name: str) -> list[float]:
    try:
        vals = [float(s) for s in str(value).split(",") if s.strip()]
    except ValueError as err:
        raise click.BadParameter(f"{name}: expected comma-separated numbers, got {value!r}") from err
    if not vals or min(vals) <= 0:
        raise click.BadParameter(f"{name}: expected positive numbers, got {value!r}")
    return vals


def _write_json(out: Path, name: str, payload: Any) -> Path:
    from ..train.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
    return path


def _load(spec: str, ema: bool) -> Any:
    from ..analysis.specs import load

    try:
        model = load(spec, ema=ema)
    except (ValueError, FileNotFoundError) as err:
        raise click.BadParameter(str(err), param_hint=f"RUN {spec!r}") from err
    except RuntimeError as err:  # e.g. weights that do not fit the network the config builds
        raise click.ClickException(f"cannot load {spec!r}: {str(err).splitlines()[0]}") from err
    return model


def _guided(model: Any, guidance: float | None, spec: str) -> Any:
    """``model`` measured at classifier-free guidance scale ``guidance`` (etsdm.guidance.guided:
    ε_u + s(ε_c − ε_u)); None or 1: the conditional network itself, unchanged."""
    if guidance is None or guidance == 1.0:
        return model
    if not getattr(model, "num_classes", 0):
        raise click.BadParameter(f"{guidance:g}: {spec} is not class-conditional (it has no labels to "
                                 "guide); leave --guidance out", param_hint="--guidance")
    import copy

    from ..guidance import guided

    measured = copy.copy(model)
    measured.denoiser = guided(model.denoiser, guidance)
    return measured


def _space(model: Any) -> str:
    """Where K and the perturbation error are measured: 'latent' for a latent run (Fig. A10), else 'data'."""
    return "latent" if getattr(model, "latents", None) is not None else "data"


ANALYTIC_LABELS = {
    "gmm": "exact ε* (baseline) [gmm]",
    "gmm:etsdm": "exact E-TSDM optimum [gmm:etsdm]",
    "gmm:etsdm-uniform": "exact E-TSDM, Eq. A15 weights [gmm:etsdm-uniform]",
}


def _labels(value: str | None, runs: tuple[str, ...]) -> list[str | None]:
    if value is None:
        return [None] * len(runs)
    labels = [s.strip() for s in value.split(",")]
    if len(labels) != len(runs):
        raise click.BadParameter(f"give one label per RUN ({len(runs)}), got {len(labels)}", param_hint="--labels")
    return labels


def _label(model: Any, spec: str, given: str | None = None) -> str:
    if given:
        return given
    from ..analysis.specs import split_spec

    base, suffix = split_spec(spec)
    if base == "gmm" and suffix in (":edm", ":flow"):  # the baseline's output is F* or u*, not ε*
        return f"{model.name} [{spec}]"
    if base in ANALYTIC_LABELS:
        return ANALYTIC_LABELS[base].replace(f"[{base}]", f"[{spec}]")
    name = getattr(model, "name", None) or spec
    return name if name == spec or spec in name else f"{name} [{spec}]"


def _data(model: Any, split: str, n: int, seed: int, data: str | None) -> tuple[torch.Tensor, dict]:
    """x0 rows and their conditions (``etsdm.analysis.specs.data_batch``)."""
    from ..analysis.specs import data_batch

    try:
        return data_batch(model, split, n, seed, data)
    except (ValueError, FileNotFoundError, OSError) as err:
        hint = "" if data is not None else " (give --data for a model without a data set)"
        raise click.BadParameter(f"{err}{hint}", param_hint="--data") from err


def _mean_std(rows: list) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(rows, dtype=float)
    return arr.mean(0), (arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1:]))


# --------------------------------------------------------------------------------------------
@click.command("lipschitz", short_help="Lipschitz constants K(t, t′) of the network in t (Eq. 8), RUNs in one figure.")
@click.argument("runs", nargs=-1, required=True)
@click.option("--t-start", type=float, default=None, help="first t (default 0, or Δt in continuous time)")
@click.option("--t-max", type=float, default=None, help="last t (default t_max − Δt: the whole range)")
@click.option("--dt", type=float, default=None, help="Δt = t′ − t (default 1 timestep, 1/T continuous)")
@click.option("--stride", type=click.IntRange(min=1), default=1, help="measure every stride-th t")
@click.option("--log-points", type=click.IntRange(min=2), default=None, help="instead: this many log-spaced t")
@click.option(
    "--output",
    type=click.Choice(["net", "eps", "v", "x0"]),
    default="net",
    help="what is differentiated: the network's own output (default: ε, v or x0 per its prediction type) "
    "or that quantity converted at physical time",
)
@click.option(
    "--scale",
    type=click.Choice(["step", "time"]),
    default="step",
    help="unit of K: per discrete-equivalent step (default; continuous Δt in units of 1/T) or per unit of "
    "the schedule's own time",
)
@click.option("--samples", type=click.IntRange(min=1), default=64, help="data samples x_0 per t")
@click.option("--batch-size", type=click.IntRange(min=2), default=1024, help="examples per network call")
@click.option("--seeds", default="0", help=SEEDS_HELP)
@click.option("--split", default="train", help="data split the x_0 come from")
@click.option("--data", default=None, help="data for x_0 instead of the run's own: digits | gmm | FILE.npz")
@click.option("--yscale", type=click.Choice(["log", "linear"]), default="log", help="y axis of the figure")
@click.option("--labels", default=None, help="comma-separated legend labels, one per RUN")
@click.option("--guidance", type=float, default=None, help=GUIDANCE_HELP)
@click.option("--ema/--no-ema", default=True, help="EMA weights of a trained run")
@click.option("--progress/--no-progress", default=True, help="a progress bar on stderr")
@click.option("--pdf", is_flag=True, help="also write the figure as PDF")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("lipschitz"), help="folder")
def lipschitz_cmd(
    runs, t_start, t_max, dt, stride, log_points, output, scale, samples, batch_size, seeds, split, data, yscale,
    labels, guidance, ema, progress, pdf, out,
):  # fmt: skip
    """K(t, t′) = E‖f(x_t, t) − f(x_t, t′)‖₂ / Δt (Eq. 8) for every t, one curve per RUN.

    f is the network's own output (ε, v or x0; --output converts), x_t is drawn from the forward
    process of each run's own data, and the network is called through its Denoiser (its condition
    map applies). K is per discrete-equivalent step (--scale), so discrete and continuous RUNs share
    one axis. Cost: 2 × samples × (number of t) evaluations per seed, estimated before starting.
    Writes OUT/lipschitz.json and OUT/lipschitz.png (all RUNs in one figure).

    Conditional RUNs get each x_0's own condition at t and t′ alike: a super-resolution run its
    low-resolution input, a class-conditional run its label (--guidance: the guided output). A
    latent run is measured in latent space (Fig. A10): x_0 = the encoded data.
    """
    from ..analysis.lipschitz import lipschitz_curve, sharing_boundaries
    from ..plotting import plot_lipschitz

    seed_list, label_list = _seeds(seeds), _labels(labels, runs)
    plans = [_lipschitz_plan(spec, ema, t_start, t_max, dt, stride, log_points, guidance) for spec in runs]
    if len({p["schedule"].continuous for p in plans}) > 1:  # --t-start/--t-max/--dt: each schedule's own unit
        raise click.BadParameter(
            "RUNs mix discrete and continuous time; measure them in separate calls (K is per discrete-equivalent "
            "step in both by default, so their numbers compare)"
        )
    _lipschitz_estimate(plans, samples, batch_size, seed_list, split, data, output, dt)
    curves = []
    for plan, given in zip(plans, label_list, strict=True):
        model, schedule, times, spec = plan["model"], plan["schedule"], plan["times"], plan["spec"]
        label = _label(model, spec, given)
        per_seed = []
        for seed in seed_list:
            x0, cond = _data(model, split, samples, seed, data)
            gen = torch.Generator(device=x0.device).manual_seed(seed)
            per_seed.append(
                lipschitz_curve(
                    model, x0, schedule, times, dt=dt, output=output, scale=scale, batch_size=batch_size,
                    generator=gen, progress=progress, desc=f"{label[:32]} seed {seed}", cond=cond,
                )
            )  # fmt: skip
        first = per_seed[0]
        k_mean, k_std = _mean_std([c.K.tolist() for c in per_seed])
        boundaries = sharing_boundaries(model.denoiser.condition)
        curve = {
            "run": spec,
            "label": label,
            "schedule": schedule.config(),
            "continuous": schedule.continuous,
            "prediction": model.denoiser.prediction,
            "condition": model.denoiser.condition.config(),
            "network_inputs": sorted(cond),  # the conditions each x_0 brings (lowres, labels)
            "guidance": plan["guidance"],
            "space": _space(model),
            "boundaries": boundaries,
            "output": first.output,  # the quantity differentiated
            "output_is_network": first.network_output,  # the network's own output, not a conversion
            "K_scale": first.scale,
            "K_unit": first.unit,
            "K_steps_per_time_unit": first.steps_per_unit,  # K = ‖Δf‖ / (dt · this)
            "t": times.tolist(),
            "dt": first.dt,
            "K": k_mean.tolist(),
            "K_std_over_seeds": k_std.tolist(),
            # the band of the figure: ±2 standard errors, over samples (one seed) or over seeds
            "K_sem": (first.K_sem.numpy() if len(seed_list) == 1 else k_std / len(seed_list) ** 0.5).tolist(),
            "K_per_seed": [c.K.tolist() for c in per_seed],
            "n_samples": samples,
            "seeds": seed_list,
            "evaluations_per_seed": first.evaluations,
            "calls_per_seed": first.calls,
        }
        curve["summary"] = _lipschitz_summary(curve, plan, plans)
        curves.append(curve)
        click.echo(_lipschitz_line(curve))
    json_path = _write_json(out, "lipschitz.json", {"curves": curves})
    if yscale == "log" and not any(k > 0 for c in curves for k in c["K"]):  # e.g. E-TSDM inside one sub-interval
        click.echo("note: every K is 0 (no change of the output between t and t′), so the figure's y axis is linear",
                   err=True)
        yscale = "linear"
    figs = plot_lipschitz(curves, out / "lipschitz.png", yscale=yscale, pdf=pdf)
    click.echo(f"wrote {json_path} and {', '.join(map(str, figs))}")


def _lipschitz_plan(spec, ema, t_start, t_max, dt, stride, log_points, guidance) -> dict[str, Any]:
    from ..analysis.lipschitz import lipschitz_times

    model = _guided(_load(spec, ema), guidance, spec)
    try:
        times = lipschitz_times(
            model.schedule, t_start=t_start, t_end=t_max, dt=dt, stride=stride, log_points=log_points
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--t-start/--t-max/--dt") from err
    return {"spec": spec, "model": model, "schedule": model.schedule, "times": times,
            "guidance": _guidance_record(model, guidance)}


def _guidance_record(model: Any, guidance: float | None) -> float | None:
    """The guidance scale a class-conditional model is measured at (1 unless --guidance); None otherwise."""
    return (1.0 if guidance is None else guidance) if getattr(model, "num_classes", 0) else None


def _lipschitz_estimate(plans, samples, batch_size, seeds, split, data, output, dt) -> None:
    """Print, before any measurement, the network evaluations of the whole command and the time
    they should take, from one timed network call of a full batch per RUN (stderr)."""
    from ..analysis.lipschitz import lipschitz_cost, time_one_call

    total_evals, total_s = 0, 0.0
    for plan in plans:
        evals, calls = lipschitz_cost(samples, len(plan["times"]), batch_size)
        x0, cond = _data(plan["model"], split, samples, seeds[0], data)
        rows = min(batch_size - batch_size % 2, evals)
        call_s = time_one_call(
            plan["model"], x0, plan["schedule"], plan["times"], dt=dt, output=output, batch_size=batch_size, cond=cond
        )
        seconds = call_s * calls * len(seeds)
        total_evals, total_s = total_evals + evals * len(seeds), total_s + seconds
        click.echo(
            f"{plan['spec']}: {len(plan['times'])} t × {samples} samples × 2 × {len(seeds)} seed(s) = "
            f"{evals * len(seeds):,} network evaluations in {calls * len(seeds):,} calls of ≤ {rows} "
            f"(one call took {call_s:.3g} s): ≈ {_duration(seconds)}",
            err=True,
        )
    click.echo(f"lipschitz: {total_evals:,} network evaluations, expected ≈ {_duration(total_s)}", err=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _lipschitz_summary(curve: dict, plan: dict, plans: list[dict]) -> dict[str, Any]:
    """curve_summary over [t_start, t̃): t̃ of this run's E-TSDM sharing, else of the first E-TSDM
    RUN on the same kind of time, else the paper's default (100 timesteps, 0.1 continuous)."""
    from ..analysis.lipschitz import curve_summary
    from ..analysis.stability import default_t_tilde

    same_kind = [p for p in plans if p["schedule"].continuous == plan["schedule"].continuous]
    shared = [p["model"].denoiser.condition for p in [plan, *same_kind]]
    t_tilde = next((float(c.t_tilde) for c in shared if hasattr(c, "t_tilde")), default_t_tilde(plan["schedule"]))
    return curve_summary(curve["t"], curve["K"], curve["dt"], t_tilde, curve["boundaries"])


def _lipschitz_line(curve: dict) -> str:
    s = curve["summary"]
    lo, hi = s["window"]
    jump = " (a sub-interval boundary jump)" if s["max_is_boundary_jump"] else ""
    close = "]" if s["window_end_included"] else ")"
    line = (
        f"{curve['label']}: K over t ∈ [{lo:g}, {hi:g}{close}: mean {s['mean']:.4g}, "
        f"max {s['max']:.4g} at t = {s['t_at_max']:.4g}{jump}"
    )
    if "max_off_boundaries" in s:
        line += f", max inside sub-intervals {s['max_off_boundaries']:.4g} at t = {s['t_at_max_off_boundaries']:.4g}"
    k = np.asarray(curve["K"])
    kind = "network output" if curve["output_is_network"] else "converted from the network output"
    return (
        f"{line}; K(last t) {k[-1]:.4g}. K of {curve['output']} ({kind}), {curve['K_unit']}; "
        f"{curve['evaluations_per_seed']:,} evaluations per seed"
    )


# --------------------------------------------------------------------------------------------
@click.command("stability", short_help="Error of the predicted x0 under input perturbations at t̃ (Fig. 2).")
@click.argument("runs", nargs=-1, required=True)
@click.option("--t", "t_tilde", type=float, default=None, help="time t̃ of the perturbation (default 100 / 0.1)")
@click.option("--scales", default="0.05,0.1,0.2,0.3", help="comma-separated perturbation std devs")
@click.option("--samples", type=click.IntRange(min=2), default=256, help="data samples x_0")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, help="examples per network call")
@click.option("--seeds", default="0,1,2", help=SEEDS_HELP)
@click.option("--split", default="test", help="data split the x_0 come from")
@click.option("--data", default=None, help="data for x_0 instead of the run's own: digits | gmm | FILE.npz")
@click.option("--reference", type=click.IntRange(min=0), default=0, help="index of the RUN the others are compared to")
@click.option(
    "--metric",
    type=click.Choice(["mse", "rms"]),
    default="mse",
    help="per-pixel mean squared change of x0 (default; the paper's Fig. 2 scale, grows like s²) or its root",
)
@click.option("--labels", default=None, help="comma-separated legend labels, one per RUN")
@click.option("--guidance", type=float, default=None, help=GUIDANCE_HELP)
@click.option("--ema/--no-ema", default=True, help="EMA weights of a trained run")
@click.option("--pdf", is_flag=True, help="also write the figure as PDF")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("stability"), help="folder")
def stability_cmd(
    runs, t_tilde, scales, samples, batch_size, seeds, split, data, reference, metric, labels, guidance, ema, pdf, out
):
    """Error of the predicted x0 when x_t̃ is perturbed by N(0, s²I), per scale s (Fig. 2).

    The error is the per-pixel MSE of the change of x0 (--metric rms: its root). All RUNs see the
    same x_t̃ and the same perturbations per seed; the figure labels each bar with its relative
    difference to the reference RUN. Writes OUT/stability.json and OUT/stability.png.

    Conditional RUNs keep each x_0's own condition (low-resolution input, label; --guidance: the
    guided x0) under the perturbation; a latent run is perturbed in latent space.
    """
    from ..analysis.stability import perturbation_error, relative_difference
    from ..plotting import plot_stability

    scale_list, seed_list = _floats(scales, "--scales"), _seeds(seeds)
    if reference >= len(runs):
        raise click.BadParameter(f"--reference must be < number of RUNs ({len(runs)})")
    label_list = _labels(labels, runs)
    results = []
    for spec, given in zip(runs, label_list, strict=True):
        model = _guided(_load(spec, ema), guidance, spec)
        rows = []
        for seed in seed_list:
            x0, cond = _data(model, split, samples, seed, data)
            gen = torch.Generator(device=x0.device).manual_seed(seed)
            try:
                res = perturbation_error(
                    model, x0, model.schedule, t=t_tilde, scales=scale_list, generator=gen, batch_size=batch_size,
                    metric=metric, cond=cond,
                )  # fmt: skip
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="--t/--scales") from err
            rows.append(res)
        mean, std = _mean_std([r.error.tolist() for r in rows])
        results.append(
            {
                "run": spec,
                "label": _label(model, spec, given),
                "t": rows[0].t,
                "scales": scale_list,
                "error": mean.tolist(),
                "error_std": std.tolist(),
                "error_per_seed": [r.error.tolist() for r in rows],
                "n_samples": samples,
                "seeds": seed_list,
                "metric": metric,
                "metric_definition": rows[0].to_dict()["metric_definition"],
                "network_inputs": sorted(cond),
                "guidance": _guidance_record(model, guidance),
                "space": _space(model),
            }
        )
    ref = results[reference]["error"]
    for res in results:
        res["relative_difference_to_reference"] = relative_difference(res["error"], ref).tolist()
    for line in _stability_table(results, scale_list, metric):
        click.echo(line)
    json_path = _write_json(out, "stability.json", {"reference": reference, "results": results})
    figs = plot_stability(results, out / "stability.png", reference=reference, pdf=pdf)
    click.echo(f"wrote {json_path} and {', '.join(map(str, figs))}")


def _stability_table(results: list[dict], scales: list[float], metric: str) -> list[str]:
    """One row per scale, one column per RUN; every column as wide as its label or its widest cell."""
    columns = []
    for r in results:
        cells = [
            f"{e:.4g} ± {sd:.2g} ({100 * rel:+.1f}%)"
            for e, sd, rel in zip(r["error"], r["error_std"], r["relative_difference_to_reference"], strict=True)
        ]
        width = max(len(r["label"]), *(len(c) for c in cells))
        columns.append([r["label"].rjust(width), *(c.rjust(width) for c in cells)])
    first = [f"scale ({metric.upper()})", *(f"{s:g}" for s in scales)]
    first_width = max(len(c) for c in first)
    return ["  ".join([a.ljust(first_width), *row]) for a, *row in zip(first, *columns, strict=True)]


# --------------------------------------------------------------------------------------------
@click.command("schedules", short_help="dα/dt at 0, σ and dσ/dt near 0, SNR curves, Fig. A8, A9; K(t) per process.")
@click.option("--T", "T", type=click.IntRange(min=2), default=1000, help="discrete timesteps")
@click.option("--pdf", is_flag=True, help="also write the figures as PDF")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("schedules"), help="folder")
@click.option("--config", "config_src", type=click.Path(exists=True, path_type=Path), default=None,
              help="See what you configured instead: a YAML config, run, checkpoint or exported folder -> its "
                   "condition map f(t), training-time density and loss weight (OUT/training.png, training.json).")
@click.option("--processes", is_flag=True,
              help="Instead: Theorem 3.1 per process — the analytic K(t) of the exact optimum as t -> the data end on "
                   "VP (linear, cosine), EDM and flow matching, and the ideal E-TSDM optimum's (OUT/processes.*).")
@click.option("--process-samples", type=click.IntRange(min=2), default=2000, show_default=True,
              help="data samples per t for --processes")
@click.option("--process-data-std", default="0.1,0.01,0.001", show_default=True,
              help="--processes: per-mode std s of the ring data, comma-separated (the first gets every row, the "
                   "others the data-scale rows)")
def schedules_cmd(T, pdf, out, config_src, processes, process_samples, process_data_std):
    """Theory at a glance: dα/dτ at 0 (Appendix C.1), σ and dσ/dτ near 0 (Theorem 3.1), SNR curves,
    Modified-NS / original SNR (Fig. A8), remap SNR when t vs λ is uniform (Fig. A9).

    Writes OUT/schedules.json, OUT/snr.png, OUT/snr_ratio_modified.png, OUT/remap_snr.png.
    With --config: OUT/training.png and OUT/training.json for that config (etsdm.training_view).
    With --processes: OUT/processes.json, OUT/processes.md, OUT/processes.png and, for several data
    stds, OUT/processes_data_scale.png (etsdm.analysis.processes; about a minute on one CPU core).
    """
    if config_src is not None:
        _training_view(config_src, out, pdf)
        return
    if processes:
        _processes(out, process_samples, _floats(process_data_std, "--process-data-std"), pdf)
        return
    from ..analysis.theory import remap_snr, schedule_table, snr_curves, snr_ratio_modified
    from ..plotting import plot_remap_snr, plot_snr_curves, plot_snr_ratio

    table = schedule_table(T=T)
    click.echo(
        f"{'schedule':<24}{'dα/dτ|0':>11}{'closed form':>13}{'σ(1e-3)':>10}{'dσ/dτ(1e-4)':>13}{'dσ/dτ(1e-2)':>13}"
    )
    for row in table:
        name = row["schedule"] + (" Modified-NS" if row["modified"] else "")
        cf = row["dalpha_dt_0_closed_form"]
        click.echo(
            f"{name:<24}{row['dalpha_dt_0'] + 0.0:>11.4g}{'—' if cf is None else f'{cf + 0.0:.4g}':>13}"
            f"{row['sigma'][1]:>10.4g}{row['dsigma_dt'][0]:>13.4g}{row['dsigma_dt'][2]:>13.4g}"
        )
    curves = {}
    for name, (t, snr) in snr_curves(T=T).items():
        curves[name] = (t, snr)
        mod = snr_curves([name], T=T, modified=True)
        if name in mod:
            curves[f"{name} (Modified-NS)"] = mod[name]
    ratios = snr_ratio_modified(T=T)
    remaps = [remap_snr("linear", T=T, kind=k) for k in ("inverse", "inverse-sigmoid")]
    payload = {
        "T": T,
        "table": table,
        "snr": {k: v[1].tolist() for k, v in curves.items()},
        "snr_ratio_modified": {k: v[1].tolist() for k, v in ratios.items()},
        "remap_snr": remaps,
    }
    json_path = _write_json(out, "schedules.json", payload)
    figs = plot_snr_curves(curves, out / "snr.png", pdf=pdf)
    figs += plot_snr_ratio(ratios, out / "snr_ratio_modified.png", pdf=pdf)
    figs += plot_remap_snr(remaps, out / "remap_snr.png", pdf=pdf)
    click.echo(f"wrote {json_path} and {', '.join(map(str, figs))}")


def _processes(out: Path, samples: int, stds: list[float], pdf: bool) -> None:
    from ..analysis.processes import markdown_table, plot_data_scale, plot_singularity, process_tables
    from ..train.checkpoint import atomic_write_text

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-D mixture: tiny tensor ops, fastest (and not slowed by a busy CPU) on one thread
    try:
        results = process_tables(stds, samples=samples)
    finally:
        torch.set_num_threads(before)
    lines = []
    for res in results:
        head = f"Data: {res['mixture']}; {res['samples']} samples, seed {res['seed']}."
        lines += [head, "", *markdown_table(res), ""]
    for line in lines:
        click.echo(line)
    json_path = _write_json(out, "processes.json", {"results": results})
    atomic_write_text(out / "processes.md", "\n".join(lines))
    figs = plot_singularity(results[0], out / "processes.png", pdf=pdf)
    if len(results) > 1:
        figs += plot_data_scale(results, out / "processes_data_scale.png", pdf=pdf)
    click.echo(f"wrote {json_path}, {out / 'processes.md'} and {', '.join(map(str, figs))}")


def _training_view(source: Path, out: Path, pdf: bool) -> None:
    from ..config import ConfigError
    from ..training_view import config_of, describe, plot_training_view, training_view

    try:
        view = training_view(config_of(source), label=source.stem if source.is_file() else source.name)
    except (ConfigError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--config") from None
    for line in describe(view):
        click.echo(line)
    json_path = _write_json(out, "training.json", view)
    figs = plot_training_view(view, out / "training.png", pdf=pdf)
    click.echo(f"wrote {json_path} and {', '.join(map(str, figs))}")


# --------------------------------------------------------------------------------------------


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    import zipfile

    if not zipfile.is_zipfile(path):  # else numpy falls back to unpickling and says so
        raise click.BadParameter(
            f"{path} is not an .npz file (a zip archive of arrays, as numpy.savez and `etsdm sample` write)",
            param_hint=what,
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise click.BadParameter(f"cannot read {path} as .npz: {err}", param_hint=what) from err


def _array(data: dict, path: Path, keys: tuple[str, ...], what: str) -> torch.Tensor:
    for key in keys:
        if key in data:
            return torch.as_tensor(data[key])
    raise click.BadParameter(
        f"{path} has no array {' or '.join(map(repr, keys))} (found {sorted(data)})", param_hint=what
    )


def _folder_images(path: Path, shape: tuple[int, ...]) -> Any:
    """An image folder as an FID reference, read at the samples' channels and size."""
    from ..data import ImageFolderDataset, stack_images
    from ..metrics.evaluate import MAX_REFERENCE_IMAGES, ImageSet

    if len(shape) != 4 or shape[1] not in (1, 3) or shape[2] != shape[3]:
        raise click.BadParameter(f"an image folder as reference needs square 1- or 3-channel image samples, "
                                 f"got samples of shape {shape}", param_hint="--ref")
    try:
        folder = ImageFolderDataset(path, split="all", resolution=shape[2], channels=shape[1])
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--ref") from None
    images = stack_images(folder, MAX_REFERENCE_IMAGES)
    return ImageSet(images, None, f"{len(images)} images of {path} at the samples' {shape[1]}x{shape[2]}x{shape[3]}")


def _reference(ref: str, split: str, shape: tuple[int, ...] = ()) -> tuple[str, Any]:
    """('digits', train images) | ('gmm', mixture) | ('images', ImageSet of a folder) | ('file', images)."""
    if ref == "digits":
        from ..metrics.features import digits_split

        return "digits", digits_split(split)[0]
    if ref == "gmm":
        from ..analysis.specs import reference_mixture

        return "gmm", reference_mixture()
    path = Path(ref)
    if path.is_dir():
        return "images", _folder_images(path, shape)
    if not path.is_file():
        raise click.BadParameter(f"{ref!r} is neither 'digits', 'gmm', an image folder nor an existing .npz file",
                                 param_hint="--ref")
    from ..metrics.checks import SampleError, check_samples

    images = _array(_load_npz(path, "--ref"), path, ("samples", "images", "targets", "x"), "--ref")
    try:
        return "file", check_samples(images, what=f"reference images in {path}")[0]
    except SampleError as err:
        raise click.BadParameter(str(err), param_hint="--ref") from None


def _feature_net(path: Path | None, out: Path):
    from ..metrics.features import load_feature_net, save_feature_net, train_feature_net

    if path is not None:
        try:
            net, report = load_feature_net(path)
        except (FileNotFoundError, ValueError) as err:
            raise click.BadParameter(str(err), param_hint="--features") from err
        return net, {"file": str(path), **report}
    net, report = train_feature_net()
    save_feature_net(net, out / "digits_features.safetensors", report)
    click.echo(f"trained the digits feature net (held-out accuracy {report.test_accuracy:.4f}); saved in {out}")
    return net, {"file": str(out / "digits_features.safetensors"), **report.__dict__}


def _metric_names(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """--metric: names from METRICS, repeated and / or comma-separated (psnr,ssim)."""
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise click.BadParameter(f"{', '.join(map(repr, unknown))}: allowed: {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


@click.command("evaluate", short_help="Sample quality: FID-n with its floor, mixture metrics, PSNR/SSIM.")
@click.argument("source", metavar="SAMPLES", type=click.Path(exists=True, path_type=Path))
@click.option("--ref", default=None,
              help="reference: 'digits', 'gmm', an image folder (fid-own), or an .npz (key samples/images/targets/x). "
                   "Default: a RUN's own data; for SAMPLES with targets (--targets or a targets array): psnr, ssim")
@click.option("--targets", "targets_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="psnr / ssim ground truth, image i paired with sample i: an `etsdm sr-pairs` folder (its "
                   "pairs.npz highres), an .npz (array highres / targets / samples / images / x) or a PNG folder "
                   "(sorted names)")
@click.option("--metric", "metrics", multiple=True, callback=_metric_names, metavar="NAME[,NAME]",
              help=f"comma-separated or repeated, of {', '.join(METRICS)} (default by the reference)")
@click.option("--seeds", default="0,1,2", help=SEEDS_HELP)
@click.option("--n", type=click.IntRange(min=2), default=None, help="FID-n: images per set (default: all that fit)")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="SAMPLES a RUN: samples to generate (default as `etsdm sample`: 100; sr: the first 100 test rows)")
@click.option(
    "--features",
    "features_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="digits feature net from `etsdm features` (default: train one now, deterministic)",
)
@click.option(
    "--inception-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="LOCAL Inception-v3 weights for fid-inception (never downloaded; needs etsdm[inception])",
)
@click.option("--pdf", is_flag=True, help="also write figures as PDF")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("evaluate"), help="folder")
def evaluate_cmd(source, ref, targets_path, metrics, seeds, n, num, features_path, inception_weights, pdf, out):
    """Sample quality of SAMPLES: an .npz from `etsdm sample` (key "samples", values in [-1, 1]), a
    folder of PNG images (sorted names), or a RUN (sampled now as `etsdm sample RUN` would, with
    its default sampler: class-conditional runs cycle over their classes, latent runs are decoded,
    super-resolution runs get their test split's inputs; OUT/samples.npz keeps them).

    fid-digits: Fréchet distance in the digits classifier's features, FID-n with the real-vs-real
    floor (digits test split vs train split) at the same n. gmm: near-mode share, mode balance,
    per-mode spread vs true std, exact log-likelihood, sliced W1, MMD², each with its
    true-vs-true value. fid-own (an image folder as --ref): FID-n with its floor in the features
    of a small CNN trained now on the folder's images (rotation prediction; the digits net is for
    digits only). psnr / ssim: image i against target i (--targets, or "targets" in SAMPLES or the
    --ref .npz), e.g. super-resolution outputs against their high-resolution images (Fig. A12).
    Writes OUT/evaluate.json and a PNG of the samples.
    """
    from ..metrics.checks import SampleError, check_samples
    from ..metrics.evaluate import evaluate_samples, format_results
    from ..plotting import sample_grid, scatter_2d

    seed_list = _seeds(seeds)
    raw, file_targets, run_reference = _samples(source, num, out)
    try:  # before any work: NaN/inf, integer pixels, a wrong range (see etsdm.metrics.checks)
        x, _ = check_samples(raw, what=f"samples in {source}")  # (evaluate_samples reports the notes)
    except SampleError as err:
        raise click.ClickException(str(err)) from None
    targets, target_name = _targets(targets_path, file_targets, source)
    kind, reference = _evaluation_reference(ref, run_reference, targets, source, tuple(x.shape))
    out.mkdir(parents=True, exist_ok=True)
    net, report = None, None
    if kind == "digits" and (not metrics or "fid-digits" in metrics):
        net, report = _feature_net(features_path, out)
    try:
        results = evaluate_samples(
            raw,
            "digits" if kind == "digits" else reference,
            metrics or None,
            seeds=seed_list,
            n=n,
            feature_net=net,
            inception_weights=inception_weights,
            targets=targets,
            pair_names=(str(source), target_name),
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--metric/--ref/--targets/--n") from err
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    results = {"samples": str(source), "ref": ref if ref is not None else kind,
               **({"targets": target_name} if targets is not None else {}), **results}
    if "fid-digits" in results:
        results["fid-digits"]["feature_net"] = report
    for line in format_results(results):
        click.echo(line)
    json_path = _write_json(out, "evaluate.json", results)
    if x.ndim == 4:
        figs = sample_grid(x[:100], out / "samples.png", pdf=pdf)
    else:
        means = reference.means if kind == "gmm" else None
        figs = scatter_2d(
            x.reshape(x.shape[0], -1)[:, :2], out / "samples.png", means=means, title=str(source.name), pdf=pdf
        )
    click.echo(f"wrote {json_path} and {', '.join(map(str, figs))}")


def _is_model_folder(path: Path) -> bool:
    """A run, checkpoint or diffusers folder (etsdm.runs.load_model), as opposed to a folder of PNGs."""
    from ..runs import is_checkpoint_dir, is_run_dir
    from ..runs.store import diffusers_unet_dir

    return is_run_dir(path) or is_checkpoint_dir(path) or diffusers_unet_dir(path) is not None


def _samples(source: Path, num: int | None, out: Path) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """(samples, their targets if SAMPLES holds them, the run's own reference if SAMPLES is a run)."""
    if source.is_dir() and _is_model_folder(source):
        return _run_samples(source, num, out)
    if source.is_dir():
        from ..metrics.image import read_png_folder

        try:
            return read_png_folder(source), None, None
        except (OSError, ValueError) as err:
            raise click.BadParameter(str(err), param_hint="SAMPLES") from None
    data = _load_npz(source, "SAMPLES")
    raw = _array(data, source, ("samples",), "SAMPLES")
    targets = torch.as_tensor(data["targets"]).float() if "targets" in data else None
    return raw, targets, None


def _run_samples(run: Path, num: int | None, out: Path) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """Samples of a RUN drawn now as `etsdm sample RUN` draws them (its default sampler and NFE,
    seed 0), saved as OUT/samples.npz; their targets (super-resolution) and the run's reference."""
    from ..runs import default_sampler, generate
    from ..train.outputs import write_atomic
    from .run import generation_inputs, run_reference

    model = _load(str(run), ema=True)
    sampler, nfe = default_sampler(model)
    inputs = generation_inputs(model, num)
    click.echo(f"sampling {inputs.num} from {run} ({sampler}, {nfe} NFE, seed 0)", err=True)
    try:
        x = generate(model, inputs.num, sampler=sampler, nfe=nfe, seed=0, cond=inputs.cond, progress=True)
    except ValueError as err:
        raise click.ClickException(f"cannot sample {run}: {err}") from None
    x = x.clamp(-1, 1) if x.ndim == 4 else x
    arrays = {k: v.numpy() for k, v in (inputs.cond or {}).items()}  # labels / lowres beside the samples
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "samples.npz", lambda p: np.savez_compressed(p, samples=x.numpy(), **arrays))
    return x, inputs.targets, run_reference(model, inputs.targets)


def _targets(path: Path | None, in_file: torch.Tensor | None, source: Path) -> tuple[torch.Tensor | None, str]:
    """psnr / ssim targets: --targets, else those SAMPLES holds; and a name for messages."""
    if path is None:
        return in_file, f"the targets in {source}"
    from ..metrics.image import read_image_set
    from .run import TARGET_KEYS

    try:
        images, where = read_image_set(path, TARGET_KEYS, pair_key="highres")
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--targets") from None
    return images, where


def _evaluation_reference(ref: str | None, run_ref: Any, targets: torch.Tensor | None, source: Path,
                          shape: tuple[int, ...]) -> tuple[str, Any]:
    """(kind, reference): --ref, else a RUN's own, else the paired targets (psnr / ssim)."""
    if ref is not None:
        return _reference(ref, "train", shape)
    if run_ref is not None:
        from ..metrics.evaluate import resolve_reference

        return resolve_reference(run_ref)
    if targets is not None:
        return "file", targets
    raise click.UsageError(f"{source}: give --ref (digits, gmm, an image folder or .npz) for FID / mixture metrics, "
                           "or --targets for psnr / ssim")


# --------------------------------------------------------------------------------------------
@click.command("features", short_help="Train the digits feature network used by FID on digits.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("digits_features.safetensors"),
    help="safetensors file to write",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, help="training epochs")
@click.option("--seed", type=int, default=0, help="seed (training is deterministic on CPU)")
def features_cmd(out, epochs, seed):
    """Train the digits feature network (the feature space of fid-digits) on the digits train split.

    Deterministic, seconds on a CPU. Prints and stores (in the file's metadata and OUT.json) the
    accuracy on the held-out test split.
    """
    from ..metrics.features import save_feature_net, train_feature_net

    net, report = train_feature_net(epochs=epochs, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_feature_net(net, out, report)
    out.with_suffix(".json").write_text(json.dumps(report.__dict__, indent=2) + "\n")
    click.echo(
        f"digits feature net: train accuracy {report.train_accuracy:.4f}, held-out (test, n={report.n_test}) "
        f"accuracy {report.test_accuracy:.4f}; wrote {out}"
    )


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for command in (lipschitz_cmd, stability_cmd, schedules_cmd, evaluate_cmd, features_cmd):
        group.add_command(command)
