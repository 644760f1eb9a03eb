"""etsdm reproduce: the quick budget end to end, kill-and-restart, the toy/full plans, the verdict rule,
and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import etsdm.runs
import etsdm.train.trainer
from etsdm.cli import main as cli
from etsdm.reproduce import (
    BUDGETS,
    CLAIM_IDS,
    CLAIMS,
    ReproduceError,
    analytic,
    plan_runs,
    reproduce,
    runner,
    select_budget,
)
from etsdm.reproduce.report import claim_verdict, report_json, row_result
from etsdm.reproduce.runner import arm_overrides

REPO = Path(__file__).resolve().parents[1]


class Killed(RuntimeError):
    pass


def expected_verdict(row: dict) -> str:
    """The row's verdict recomputed: per-seed b − a from its values, the paired Student-t 95% interval,
    and VERDICT_RULE's words (excludes 0 in the paper's direction / the other / contains 0)."""
    import math

    import numpy as np
    from scipy import stats

    d = row["difference"]
    diffs = np.array(row["b_values"]["value_values"]) - np.array(row["a_values"]["value_values"])
    assert d["differences"] == pytest.approx(diffs.tolist())
    half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert (d["low"], d["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    if d["low"] <= 0 <= d["high"]:
        return "not resolved"
    return "reproduced" if (d["high"] < 0) == (row["direction"] == "lower") else "reversed"


def expected_claim_verdict(rows: list[dict]) -> str:
    primary = {r["verdict"] for r in rows if r["primary"]}
    return primary.pop() if len(primary) == 1 else "mixed"


def test_quick_end_to_end_and_kill_restart(tmp_path, monkeypatch):
    """A kill during the evaluations of the 4th run; the restart retrains none of the finished runs and
    recomputes no finished evaluation; the report has a verdict for every claim; a third call does nothing."""
    out = tmp_path / "repro"
    trained: list[str] = []
    real_trainer = etsdm.train.trainer.Trainer

    class SpyTrainer(real_trainer):
        def __init__(self, cfg, run_dir, **kw):
            trained.append(Path(run_dir).name + ("" if not kw.get("resume") else " (resumed)"))
            super().__init__(cfg, run_dir, **kw)

    sampled: list[tuple[str, str]] = []
    real_generate = etsdm.runs.generate

    def spy_generate(model, num, **kw):
        sampled.append((str(model.source), kw["sampler"]))
        return real_generate(model, num, **kw)

    monkeypatch.setattr(etsdm.train.trainer, "Trainer", SpyTrainer)
    monkeypatch.setattr(etsdm.runs, "generate", spy_generate)
    real_fid = runner.eval_fid
    calls = {"n": 0}

    def killing_fid(spec, ctx, plan, model):
        calls["n"] += 1
        if spec.key == "shared/etsdm-s1" and plan.startswith("ddim"):
            raise Killed("simulated kill")
        return real_fid(spec, ctx, plan, model)

    monkeypatch.setattr(runner, "eval_fid", killing_fid)
    with pytest.raises(Killed):
        reproduce(out, budget="quick", progress=False)
    finished = [p.parent.parent.name for p in out.glob("runs/*/*/samples/step_00000002.npz")]
    assert len(finished) == 4  # baseline-s0, baseline-s1, etsdm-s0, etsdm-s1 (killed while evaluating it)
    done_evals = {p.relative_to(out): p.stat().st_mtime_ns for p in out.glob("evals/**/*.*")}
    assert (out / "evals/shared/etsdm-s1/fid-ddpm_10.json").is_file()
    trained.clear()
    sampled.clear()
    monkeypatch.setattr(runner, "eval_fid", real_fid)
    res = reproduce(out, budget="quick", progress=False)
    assert not any(name in trained for name in ("baseline-s0", "baseline-s1", "etsdm-s0", "etsdm-s1"))
    assert trained  # the runs not reached before the kill
    assert any("shared/etsdm-s1/" in src and s == "ddim" for src, s in sampled), sampled  # unfinished
    assert not any("shared/etsdm-s1/" in src and s == "ddpm" for src, s in sampled)  # its finished pool is reused
    for rel, mtime in done_evals.items():  # finished evaluations (and sample pools) are not recomputed
        assert (out / rel).stat().st_mtime_ns == mtime, rel
    assert set(res["claims"]) == set(CLAIM_IDS)
    for claim in res["claims"].values():
        assert claim["verdict"] != "missing"
        for r in claim["rows"]:
            assert r["verdict"] == expected_verdict(r), r
        assert claim["verdict"].startswith(expected_claim_verdict(claim["rows"]))
    report = (out / "report.md").read_text()
    assert "Verdict rule" in report and "| 5b." in report and "timestep_spacing=fractional" in report
    data = json.loads((out / "report.json").read_text())
    assert data["claims"]["3"]["rows"][0]["floor"] > 0
    sr = json.loads((out / "evals/claim12/sr-etsdm-s1/sr-ddpm_10.json").read_text())  # one output per test pair
    assert sr["n"] == 12 and sr["settings"]["noise_seed"] == 1001 and 0 < sr["psnr:ddpm:10"] < 60
    row = data["claims"]["12"]["rows"][0]
    assert row["metric_a"] == "psnr:ddpm:10" and row["direction"] == "higher" and len(row["seeds"]) == 2
    assert (out / "figures" / "claim1_k_curves.png").stat().st_size > 0
    assert (out / "figures" / "claim2_stability.png").is_file()
    assert "Analytic reference" in report and (out / "evals/analytic/ideal-s1.json").is_file()
    ideal = res["analytic"]["table"]["K_max"]["etsdm"]["value"]
    assert ideal < 1e-9  # the ideal E-TSDM network is constant inside each sub-interval
    # paired noise: the two arms of seed k sampled from noise seed 1000 + k
    rec = json.loads((out / "evals/shared/etsdm-s1/fid-ddpm_10.json").read_text())
    assert rec["settings"]["noise_seed"] == 1001
    trained.clear()
    sampled.clear()
    monkeypatch.setattr(analytic, "measure_ideal", None)  # cached: never called again
    again = reproduce(out, budget="quick", progress=False)
    assert trained == [] and sampled == []
    assert again["claims"]["5"]["rows"] == res["claims"]["5"]["rows"]


def test_toy_plan_sizes_sharing_and_dry_run(tmp_path):
    toy = BUDGETS["toy"]
    specs = plan_runs(toy, CLAIM_IDS)
    by_claim = {cid: [s for s in specs if cid in s.claims] for cid in CLAIM_IDS}
    for cid in ("1", "2", "3", "5"):
        assert {s.seed for s in by_claim[cid]} == set(range(5))
    for cid in ("4", "6", "7", "8", "9", "10", "11", "12"):
        assert {s.seed for s in by_claim[cid]} == {0, 1, 2}
    main = [s for s in specs if s.group == "shared" and s.name == "etsdm"]
    assert len(main) == 5 and "fid:ddpm:1000" in main[0].metrics and "lipschitz" in main[0].metrics
    assert "fid:dpm-solver-3:20:timestep_spacing=fractional" in main[0].metrics
    sweep = [s for s in specs if s.name == "etsdm-sweep"]  # one shorter E-TSDM pair for claims 4, 6, 8
    assert len(sweep) == 3 and {"4", "6", "8"} <= set(sweep[0].claims) and "train.steps=1000" in sweep[0].overrides
    assert len({(s.group, s.name, s.seed) for s in specs}) == len(specs)  # no two runs share a folder
    assert len(specs) == 169  # 145 for claims 1-8, + 24 for EDM, flow, LDM and SR (2 arms x 3 seeds each)
    ldm = [s for s in specs if "11" in s.claims]
    assert {"fid:ddpm:1000", "lipschitz"} <= set(ldm[0].metrics)
    assert "latent.autoencoder=ae_digits.yaml" in ldm[0].overrides  # beside the packaged configs
    sr = [s for s in specs if "12" in s.claims]
    assert sr[0].metrics == ["sr:ddpm:1000", "sr:ddim:50"] and "data.name=sr" in sr[0].overrides
    text = reproduce(tmp_path / "o", budget="toy", dry_run=True, jobs=2)
    assert "estimated time" in text and "claim 8" in text and not (tmp_path / "o").exists()
    hours = float(text.split("estimated time: ")[1].split(" h")[0])
    assert 3.0 < hours < 6.0  # one core; --jobs 2 halves it (the toy budget's target: <= 3 h on 2 cores)
    from etsdm.reproduce.budgets import calibrate

    measured = calibrate(BUDGETS["quick"], steps=1, forwards=1)
    assert measured.steps_per_s > 0 and measured.sample_nfe_s > 0 and measured.max_rows == BUDGETS["quick"].max_rows
    full = reproduce(tmp_path / "o", budget="full", dry_run=True, data="/data/ffhq")
    cmds = [line for line in full.splitlines() if "accelerate launch" in line]
    assert len(cmds) == 163 and "--set data.root=/data/ffhq" in cmds[0]
    for line in cmds:  # every printed paper config exists
        assert (REPO / line.split(" train ")[1].split()[0]).is_file(), line


def test_report_json_puts_number_lists_on_one_line_and_keeps_the_value():
    results = {"K": [0.5, -1e-7, 3, None, float("nan"), float("inf"), -float("inf")], "seeds": [[1, 2], [3, 4]],
               "text": "a [\n 1,\n 2\n] in a string", "names": ["a", "b"], "empty": [], "nested": {"x": [1.5]}}
    text = report_json(results)
    assert json.dumps(json.loads(text), sort_keys=True) == json.dumps(results, sort_keys=True)
    assert '"K": [0.5, -1e-07, 3, null, NaN, Infinity, -Infinity]' in text
    assert '[1, 2]' in text and '"x": [1.5]' in text
    assert '"a",\n' in text  # strings lists stay one item per line, dicts stay indented


def test_verdict_rule_per_row_and_claim():
    claim = CLAIMS["3"]
    budget = select_budget("quick", seeds=3)
    row = budget.rows(claim)[0]
    specs, values = {}, {}
    for seed, (b, e) in enumerate([(10.0, 8.0), (11.0, 9.5), (10.5, 8.7)]):
        for arm, fid in (("baseline", b), ("etsdm", e)):
            spec = runner.RunSpec(claim.arm(arm), "main", seed, "shared", arm,
                                  arm_overrides(claim.arm(arm), budget, "main", seed, None))
            specs[(spec.overrides, seed)] = spec
            values[spec.key] = {"fid:ddpm:10": {"fid": fid, "floor": 1.0}}
    res = row_result(row, claim, budget, specs, values)
    assert res["verdict"] == "reproduced" and res["difference"]["mean"] == pytest.approx(-1.7666, abs=1e-3)
    for spec in specs.values():  # E-TSDM worse on every seed: reversed
        if spec.name == "etsdm":
            values[spec.key]["fid:ddpm:10"]["fid"] += 4
    assert row_result(row, claim, budget, specs, values)["verdict"] == "reversed"
    rows = [{"primary": True, "verdict": "reproduced"}, {"primary": True, "verdict": "reproduced"},
            {"primary": False, "verdict": "reversed"}]
    assert claim_verdict(rows) == "reproduced"
    rows[1]["verdict"] = "not resolved"
    assert claim_verdict(rows) == "mixed (1 reproduced, 1 not resolved)"


def test_a_diverged_seed_fails_its_arm_in_the_report(tmp_path, monkeypatch):
    """NaN samples: eval_fid records the divergence (no FID, no reference built) and the row is 'failed',
    naming the arm and seed, not a silently missing seed (review item 6)."""
    import torch

    claim, budget = CLAIMS["3"], select_budget("quick", seeds=2)
    row = budget.rows(claim)[0]
    ctx = runner.Context(tmp_path, budget)
    plan = runner._resolve_metric(row.metric, budget)[4:]
    pools = {0: torch.zeros(4, 1, 8, 8), 1: torch.full((4, 1, 8, 8), float("nan"))}  # etsdm seed 1 diverged
    monkeypatch.setattr(runner, "pool_samples", lambda spec, ctx, plan, model: pools[spec.seed])
    specs, values = {}, {}
    for seed in (0, 1):
        for arm in ("baseline", "etsdm"):
            spec = runner.RunSpec(claim.arm(arm), "main", seed, "shared", arm,
                                  arm_overrides(claim.arm(arm), budget, "main", seed, None))
            specs[(spec.overrides, seed)] = spec
            if arm == "etsdm" and seed == 1:
                rec = runner.eval_fid(spec, ctx, plan, lambda: etsdm.runs.load_model("gmm"))
                assert rec["fid"] is None and "NaN" in rec["diverged"] and "in 4 of 4 samples" in rec["diverged"]
            else:
                rec = {"fid": 10.0 + seed, "floor": 1.0}
            values[spec.key] = {f"fid:{plan}": rec}
    res = row_result(row, claim, budget, specs, values)
    assert res["verdict"] == "failed" and res["failed"][0].startswith("etsdm seed 1: "), res
    assert claim_verdict([res]) == "failed"


def test_a_folder_holding_another_run_is_refused(tmp_path):
    spec = next(s for s in plan_runs(BUDGETS["quick"], ["3"]) if s.name == "baseline")
    cfg = runner.run_config(spec)
    run = spec.run_dir(tmp_path)
    run.mkdir(parents=True)
    other = runner.run_config(next(s for s in plan_runs(BUDGETS["quick"], ["3"]) if s.name == "etsdm"))
    from etsdm.config import save_config

    save_config(other, run / "config.yaml")
    with pytest.raises(ReproduceError, match="holds a different run.*diffusion.condition.kind"):
        runner.check_same_run(run, cfg)


def test_steps_sets_every_familys_training_length_and_a_run_of_other_steps_is_refused(tmp_path):
    budget = select_budget("toy", seeds=4, steps=2000)
    assert {(f.seeds, f.steps) for f in budget.families.values()} == {(4, 2000)}
    assert select_budget("toy", steps=2000).families["main"].seeds == BUDGETS["toy"].families["main"].seeds
    spec = next(s for s in plan_runs(budget, ["9"]) if s.seed == 0)
    assert runner.run_config(spec).train.steps == 2000
    text = etsdm.reproduce.reproduce(tmp_path, budget="toy", claims=["9"], steps=2000, dry_run=True)
    assert "3 seeds, 2000 steps" in text
    shorter = next(s for s in plan_runs(select_budget("quick", steps=3), ["3"]) if s.name == "baseline")
    run = shorter.run_dir(tmp_path)
    run.mkdir(parents=True)
    from etsdm.config import save_config

    save_config(runner.run_config(next(s for s in plan_runs(BUDGETS["quick"], ["3"]) if s.name == "baseline")),
                run / "config.yaml")
    with pytest.raises(ReproduceError, match=r"train.steps \(2 -> 3\)"):
        runner.check_same_run(run, runner.run_config(shorter))
    with pytest.raises(ReproduceError, match="at least 1 step"):
        select_budget("toy", steps=0)
    with pytest.raises(ReproduceError, match="configs/paper"):
        select_budget("full", steps=10)


@pytest.mark.parametrize(("args", "message"), [
    (["--claims", "1,99"], "unknown claim(s) 99"),
    (["--seeds", "1"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--data", "/no/such/folder"], "neither 'digits' nor an image folder"),
    (["--budget", "huge"], "'huge' is not one of"),
    (["--jobs", "0"], "--jobs"),
    (["--device", "tpu0"], "not a torch device"),
])
def test_bad_arguments_are_click_errors(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["reproduce", "--out", str(tmp_path / "o"), "--dry-run", *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    with pytest.raises(ReproduceError, match="at least 2"):
        select_budget("toy", seeds=1)


@pytest.mark.parametrize("error", ["nonfinite", "checkpoint", "config", "oserror", "value"])
def test_run_errors_are_click_errors_not_tracebacks(tmp_path, monkeypatch, error):
    """A training/evaluation failure inside reproduce (also re-raised by fut.result() under --jobs) ends as
    a one-line error naming the cause (review item 7)."""
    import etsdm.reproduce
    from etsdm.config import ConfigError
    from etsdm.train.checkpoint import CheckpointWriteError
    from etsdm.train.trainer import NonFiniteLossError

    errors = {"nonfinite": NonFiniteLossError("loss is nan at step 7"), "checkpoint": CheckpointWriteError("disk full"),
              "config": ConfigError("sample.nfe: bad"), "oserror": OSError(28, "No space left on device"),
              "value": ValueError("bad plan")}

    def failing(*args, **kwargs):
        raise errors[error]

    monkeypatch.setattr(etsdm.reproduce, "reproduce", failing)
    res = CliRunner().invoke(cli, ["reproduce", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert f"Error: {errors[error]}" in res.output and "Traceback" not in res.output


def test_image_folder_data(tmp_path, capsys):
    """--data FOLDER: grayscale images resized to 16 px, FID in the folder's own features with a held-out floor."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    res = reproduce(tmp_path / "o", budget="quick", claims=["3"], data=str(folder), progress=True)
    err = capsys.readouterr().err
    assert "[reproduce] run 1/4 shared/baseline-s0: training" in err and "fid:ddpm:10 · elapsed" in err
    assert "ETA" in err
    row = res["claims"]["3"]["rows"][0]
    assert row["verdict"] == expected_verdict(row) and "analytic" not in res
    rec = json.loads(next((tmp_path / "o" / "evals").glob("shared/etsdm-s0/fid-*.json")).read_text())
    assert "fid-own" in rec["features"] and rec["n"] == 6
    cfg = (tmp_path / "o" / "runs/shared/etsdm-s0/config.yaml").read_text()
    assert "resolution: 16" in cfg and "channels: 1" in cfg


def test_full_budget_reports_from_finished_run_folders(tmp_path):
    """full: nothing is trained here; finished run folders (here: quick-sized ones) are evaluated and reported,
    missing ones show as missing."""
    import dataclasses

    out = tmp_path / "o"
    reproduce(out, budget="quick", claims=["3"], progress=False)
    full = dataclasses.replace(BUDGETS["quick"], name="full-test", train_only=True)
    text = reproduce(out, budget=full, claims=["3", "7"], dry_run=True)
    assert text.count("[finished]") == 4 and text.count("[to train]") == 4
    res = reproduce(out, budget=full, claims=["3", "7"], progress=False)
    rows = res["claims"]["3"]["rows"]
    assert all(r["verdict"] == expected_verdict(r) for r in rows)
    assert res["claims"]["3"]["verdict"].startswith(expected_claim_verdict(rows))
    assert res["claims"]["7"]["verdict"] == "missing" and not (out / "runs" / "claim7").exists()
