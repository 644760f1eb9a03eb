"""``etsdm reproduce``: every claim of the paper, trained (or reused), measured and judged in one report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .run import _device_option


def _claims_option(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    from ..reproduce import CLAIM_IDS

    if not value:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [c for c in ids if c not in CLAIM_IDS]
    if unknown:
        raise click.BadParameter(f"unknown claim(s) {', '.join(unknown)}; allowed: {', '.join(CLAIM_IDS)}")
    return ids


def _data_option(ctx: click.Context, param: click.Parameter, value: str) -> str | None:
    if value == "digits":
        return None
    path = Path(value)
    if not path.is_dir():
        raise click.BadParameter(f"{value!r} is neither 'digits' nor an image folder")
    return str(path.resolve())


@click.command("reproduce")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: runs/, evals/ (cached results), figures/, report.md, report.json.")
@click.option("--budget", type=click.Choice(["quick", "toy", "full"]), default="toy", show_default=True,
              help="quick: every code path, tiny sizes (seconds; numbers mean nothing). toy: all claims on digits, "
                   "~2.2 h on 2 idle CPU cores with --jobs 2 (--dry-run estimates it). full: prints the "
                   "paper-scale `accelerate launch` commands (with --dry-run) and builds the report from their "
                   "finished run folders.")
@click.option("--claims", callback=_claims_option, default=None,
              help="Comma-separated claim ids (default: all): 1 K curves, 2 stability, 3 DDPM FID, 4 schedules, "
                   "5 fast samplers, 5b baseline vs NFE, 6 ablations, 7 v-prediction, 8 alternatives, "
                   "9 EDM, 10 flow matching, 11 latent diffusion, 12 super-resolution.")
@click.option("--seeds", type=click.IntRange(min=2), default=None,
              help="Training seeds per arm for every claim (default: the budget's; toy: 5 for claims 1-3, 5; 3 else).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps per run for every claim (default: the budget's; toy: 3000 for claims 1-3, 5; "
                   "1000 else). Runs trained with other steps are refused: use a new --out.")
@click.option("--data", default="digits", callback=_data_option, show_default=True,
              help="digits, or an image folder (grayscale or RGB; resized to 16 px; FID in features of a small CNN "
                   "trained on its images, floor from a 20% held-out split).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained / evaluated at once (one process and one CPU thread each).")
@click.option("--device", default="cpu", callback=_device_option,
              help="torch device for sampling and measuring (cpu, cuda, cuda:N, mps); training uses accelerate's.")
@click.option("--dry-run", is_flag=True, help="Print the runs, the work left and its estimated time; do nothing.")
@click.option("--calibrate", is_flag=True,
              help="Time a few training steps and network calls here first, so the estimate fits this machine now.")
@click.option("--progress/--no-progress", default=True,
              help="A progress line per task (training, each evaluation) on stderr, with an ETA.")
def reproduce_cmd(out: Path, budget: str, claims: list[str] | None, seeds: int | None, steps: int | None,
                  data: str | None, jobs: int, device: str, dry_run: bool, calibrate: bool, progress: bool) -> None:
    """Re-test the paper's claims: train (or reuse) every run they need, sample, measure, and write
    OUT/report.md + OUT/report.json + OUT/figures/ with a verdict per claim.

    Resumable: killed and restarted with the same options, it reuses finished runs (resuming a cut
    one) and every finished evaluation.
    """
    import torch

    from ..reproduce import ReproduceError, reproduce
    from ..train.checkpoint import CheckpointWriteError
    from ..train.trainer import NonFiniteLossError

    torch.set_num_threads(1)  # every toy model is small: one thread is fastest on a shared CPU
    command = "etsdm " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("etsdm") else ""
    try:
        res = reproduce(out, budget=budget, claims=claims, seeds=seeds, steps=steps, data=data, jobs=jobs,
                        dry_run=dry_run, progress=progress, device=device, calibrate=calibrate,
                        command=command or f"etsdm reproduce --budget {budget} --out {out}")
    except (ReproduceError, NonFiniteLossError, CheckpointWriteError, ValueError) as err:  # as `etsdm train`
        raise click.ClickException(str(err)) from None  # (ConfigError is a ValueError)
    except OSError as err:  # e.g. the disk filled up; FileNotFoundError included
        raise click.ClickException(f"{err}; rerun the same command to continue from the finished work") from None
    if isinstance(res, str):
        click.echo(res)
        return
    for cid, claim in res["claims"].items():
        click.echo(f"claim {cid:>2} ({claim['paper_ref']}): {claim['verdict']}")
    click.echo(f"report: {out / 'report.md'}  (json: {out / 'report.json'}, figures: {out / 'figures'})")


def register(group: click.Group) -> None:
    """Add reproduce to ``group``."""
    group.add_command(reproduce_cmd)
