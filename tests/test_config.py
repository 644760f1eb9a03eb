"""Typed configs: YAML round trip, overrides, errors that name the field, and the configs/ folder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from etsdm.conditioning import Identity, Remap, TimestepSharing, default_sharing
from etsdm.config import ConfigError, RunConfig, configs_dir, dump_config, from_dict, load_config, to_dict
from etsdm.latent import is_autoencoder_config, load_autoencoder_config

ALL_CONFIGS = sorted(configs_dir().rglob("*.yaml"))
CONFIGS = [p for p in ALL_CONFIGS if not is_autoencoder_config(p)]  # diffusion runs
AUTOENCODER_CONFIGS = [p for p in ALL_CONFIGS if is_autoencoder_config(p)]


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)  # the no-config default: E-TSDM on digits
    assert cfg.data.name == "digits" and cfg.diffusion.condition.kind == "etsdm"
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert to_dict(again) == yaml.safe_load(path.read_text())


def test_overrides_coerce_types():
    cfg = load_config(None, ["train.steps=12", "train.lr=3e-4", "schedule.continuous=true",
                             "diffusion.condition.kind=etsdm", "diffusion.condition.t_tilde=0.2",
                             "diffusion.condition.n=4", "train.adam_betas=[0.8, 0.99]",
                             "model.overrides={base_channels: 16}", "train.grad_clip=null"])
    assert cfg.train.steps == 12 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == 3e-4 and cfg.schedule.continuous is True
    assert cfg.train.adam_betas == (0.8, 0.99) and cfg.model.overrides == {"base_channels": 16}
    assert cfg.train.grad_clip is None
    cond = cfg.build_condition()
    assert isinstance(cond, TimestepSharing) and cond.T is None and cond.t_tilde == 0.2 and cond.n == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stepz=3", r"unknown field train\.stepz; allowed: steps, batch_size"),
        ("nope=1", r"unknown field nope; allowed: name, data"),
        ("diffusion.condition.kind=etsd", r"condition\.kind: 'etsd' is not allowed; allowed: identity, etsdm, remap"),
        ("schedule.name=cosin", r"schedule\.name: 'cosin' is not allowed; allowed: linear, quadratic, cosine"),
        ("train.lr=0", r"train\.lr: 0\.0 is out of range; allowed \(0, inf\)"),
        ("train.ema_rate=1.5", r"train\.ema_rate: 1\.5 is out of range; allowed \[0, 1\]"),
        ("train.steps=2.5", r"train\.steps: expected an integer"),
        ("train.steps=many", r"train\.steps: expected an integer"),
        ("schedule.continuous=maybe", r"schedule\.continuous: expected true or false"),
        ("train.steps", r"expected key=value"),
        ("diffusion.condition.n=101", r"diffusion\.condition: .*need n <= t_tilde"),  # t̃ = 100 timesteps
        ("diffusion.condition.remap_grid=lambda", r"diffusion\.condition\.remap_grid: 'lambda' needs"),
        ("diffusion.time_sampling=remap-lambda", r"diffusion\.time_sampling: 'remap-lambda' needs"),
        ("data.name=folder", r"data\.root: required"),
        ("train.adam_betas=[0.9]", r"train\.adam_betas: expected a list of 2"),
    ],
)
def test_invalid_fields_name_the_path_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [1, 2}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  stesp: 3\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown field train\.stesp"):
        load_config(typo)


def test_condition_maps_built_from_config():
    assert isinstance(from_dict({}).build_condition(), Identity)
    remap = from_dict({"diffusion": {"condition": {"kind": "remap", "remap": "inverse-sigmoid"}}}).build_condition()
    assert isinstance(remap, Remap) and remap.kind == "inverse-sigmoid" and remap.T == 1000
    etsdm = from_dict({"diffusion": {"condition": {"kind": "etsdm"}}}).build_condition()
    assert (etsdm.t_tilde, etsdm.n, etsdm.T) == (100, 5, 1000)


# --- the configs/ folder ----------------------------------------------------------------------------
def test_there_is_a_config_per_experiment():
    names = {p.relative_to(configs_dir()).as_posix() for p in CONFIGS}
    for ds in ("ffhq", "celebahq", "afhq-cat", "afhq-wild", "lsun-church", "lsun-cat"):
        assert {f"paper/{ds}_baseline.yaml", f"paper/{ds}_etsdm.yaml"} <= names
    for sched in ("linear", "quadratic", "cosine", "cosine-shift", "zero-snr"):
        for kind in ("discrete", "continuous"):
            assert f"paper/schedules/ffhq_{sched}_{kind}_etsdm.yaml" in names
    for toy in ("digits", "gmm"):
        assert {f"{toy}_baseline.yaml", f"{toy}_etsdm.yaml"} <= names
    assert "paper/ffhq_large_etsdm.yaml" in names
    assert "paper/super-resolution/ffhq_sr64-256_etsdm.yaml" in names
    assert "paper/v-prediction/ffhq_v_etsdm.yaml" in names
    assert "paper/alternatives/ffhq_ddpm-r.yaml" in names
    for remap in ("inverse", "inverse-sigmoid"):  # Table A5: 2 maps x training x inference sampling
        for train, infer in (("t", "t"), ("t", "lambda"), ("lambda", "t"), ("lambda", "lambda")):
            assert f"paper/alternatives/ffhq_remap-{remap}_train-{train}_infer-{infer}.yaml" in names
    assert "paper/alternatives/ffhq_modified-ns_cosine.yaml" in names
    for process in ("edm_digits", "flow_digits", "paper/edm_cifar10", "paper/flow_ffhq256"):  # issue 9
        assert {f"{process}_baseline.yaml", f"{process}_etsdm.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(configs_dir()).as_posix())
def test_every_config_loads_and_builds_its_schedule(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    sched = cfg.build_schedule()
    assert sched.continuous == cfg.schedule.continuous and sched.T == cfg.schedule.T
    cfg.build_condition()


PAIRS = [p for p in CONFIGS if p.name.endswith("_etsdm.yaml")]


@pytest.mark.parametrize("etsdm_path", PAIRS, ids=lambda p: p.relative_to(configs_dir()).as_posix())
def test_baseline_and_etsdm_differ_only_in_the_condition_map(etsdm_path: Path):
    base_path = etsdm_path.with_name(etsdm_path.name.replace("_etsdm.yaml", "_baseline.yaml"))
    assert base_path.exists(), f"{etsdm_path.name} has no baseline partner"
    e, b = to_dict(load_config(etsdm_path)), to_dict(load_config(base_path))
    assert b["diffusion"]["condition"]["kind"] == "identity"
    assert e["diffusion"]["condition"]["kind"] == "etsdm"
    e2, b2 = copy.deepcopy(e), copy.deepcopy(b)
    del e2["diffusion"]["condition"], b2["diffusion"]["condition"]
    assert e2 == b2
    # the paper's E-TSDM setting everywhere: t̃ = 100 of T = 1000 (0.1 in continuous time), n = 5; on EDM /
    # flow the band ending at the paper's log-SNR (etsdm.conditioning.default_sharing)
    cfg = load_config(etsdm_path)
    cond, sched = cfg.build_condition(), cfg.build_schedule()
    t_tilde = default_sharing(sched)[1] if sched.kind != "vp" else (0.1 if e["schedule"]["continuous"] else 100)
    n = 20 if cfg.latent.autoencoder is not None else 5  # Appendix D.4: n = 20 for LDM
    assert cond.n == n and cond.t_tilde == pytest.approx(t_tilde, rel=1e-12)


def test_paper_configs_follow_table_a1():
    for p in CONFIGS:
        if "paper/" not in p.as_posix() or "edm_cifar10" in p.name or "paper/ldm/" in p.as_posix():
            continue  # Appendix D.4: EDM's and LDM's own settings
        cfg = load_config(p)
        large = cfg.model.preset == "large"
        assert cfg.model.preset in ("normal", "large")
        assert (cfg.train.lr, cfg.train.ema_rate, cfg.train.warmup_steps) == (1e-4, 0.9999, 0)
        assert cfg.train.batch_size == (64 if large else 96)
        assert cfg.schedule.T == 1000 and cfg.data.resolution == 256


@pytest.mark.parametrize("arm", ["baseline", "etsdm"])
def test_edm_cifar10_configs_follow_karras_et_al_config_f(arm):
    """Appendix D.4 / EDM Table 7 (CIFAR-10, DDPM++, config F) as far as etsdm has the knobs."""
    cfg = load_config(configs_dir() / "paper" / f"edm_cifar10_{arm}.yaml")
    s, d, t = cfg.schedule, cfg.diffusion, cfg.train
    assert (s.name, s.sigma_min, s.sigma_max, d.prediction, d.sigma_data) == ("edm", 0.002, 80.0, "edm", 0.5)
    assert (d.time_sampling, d.p_mean, d.p_std) == ("log-normal", -1.2, 1.2)
    assert (t.lr, t.batch_size, t.steps * t.batch_size, t.warmup_steps * t.batch_size) == (1e-3, 512, 200_000_000,
                                                                                           9_999_872)
    assert abs(t.ema_rate - 0.5 ** (512 / 500_000)) < 5e-6  # EMA half-life 0.5 Mimg
    assert (cfg.sample.sampler, cfg.sample.nfe, cfg.sample.timestep_spacing) == ("heun", 35, "karras")
    assert cfg.data.resolution == 32 and cfg.model.overrides["dropout"] == 0.13


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["schedule.continuous=true", "sample.timestep_spacing=linspace"], r"sample: .*'linspace' is for discrete"),
        (["sample.nfe=1500"], r"sample: .*1499 steps do not fit the 1000 integer timesteps"),
        (["diffusion.condition.kind=remap", "diffusion.condition.remap_grid=lambda", "sample.sampler=dpm-solver-2"],
         r"sample: the remap λ-uniform grid runs with ddpm, ddim, dpm-solver-1, dpm-solver\+\+2m; not 'dpm-solver-2'"),
        (["diffusion.condition.kind=remap", "diffusion.condition.remap_grid=lambda", "sample.nfe=1"],
         r"sample: the remap λ-uniform grid needs nfe >= 2"),
        (["diffusion.condition.kind=remap", "diffusion.condition.remap_grid=lambda", "sample.timestep_spacing=leading"],
         r"sample\.timestep_spacing: 'leading' is not used by the remap λ-uniform grid"),
    ],
)
def test_sample_config_is_checked_at_load(overrides, message):
    """The preview sampler's plan is built when the config is validated, not first mid-training (review item 5)."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    load_config(None, ["diffusion.condition.kind=remap", "diffusion.condition.remap_grid=lambda", "sample.nfe=20"])


def test_cli_shows_config_warnings_as_one_line():
    """`etsdm` prints a config warning as "warning: <message>" on stderr, without Python's source line
    (review item 14); the process's warning display is restored afterwards."""
    import warnings

    from click.testing import CliRunner

    from etsdm.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # not hidden by an earlier test's identical warning (once per location)
        before = warnings.showwarning
        res = CliRunner().invoke(main, ["train", "--set", "schedule.name=zero-snr", "--set",
                                        "diffusion.prediction=eps", "--print-config"])
        assert warnings.showwarning is before
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if "zero-snr" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: diffusion.prediction: eps with schedule.name: zero-snr")
    assert "UserWarning" not in res.stderr and "config.py" not in res.stderr and "return validate" not in res.stderr


def test_a_key_given_twice_is_an_error_naming_it(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  name: sr\n  name: digits\n")
    with pytest.raises(ConfigError, match=r"dup.yaml.*'name' given twice"):
        load_config(path)


def test_conditional_fields_are_checked_against_the_run():
    for sets, match in ((["sample.guidance=2"], "sample.guidance"), (["model.num_classes=10"], "model.num_classes"),
                        (["data.labels=true", "model.name=mlp"], "model.name"),
                        (["data.name=gmm", "data.labels=true"], "data.labels"),
                        (["latent.cache=/tmp/x"], "latent.scaling_factor / latent.cache"),
                        (["latent.autoencoder=ae.yaml", "data.name=gmm"], "latent.autoencoder")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, sets)
    cfg = load_config(None, ["data.labels=true", "sample.guidance=3"])
    assert cfg.data.labels and cfg.sample.guidance == 3.0


def test_autoencoder_configs_load_as_such_and_not_as_runs():
    assert [p.name for p in AUTOENCODER_CONFIGS] == ["ae_digits.yaml"]
    for path in AUTOENCODER_CONFIGS:
        assert load_autoencoder_config(path).autoencoder.latent_channels >= 1
        with pytest.raises(ConfigError, match="an autoencoder config"):
            load_config(path)


def test_latent_configs_name_an_autoencoder_next_to_them():
    latent = [p for p in CONFIGS if load_config(p).latent.autoencoder is not None]
    assert {"ldm_digits_etsdm.yaml", "ldm_digits_baseline.yaml", "ldm_ffhq_etsdm.yaml"} <= {p.name for p in latent}
    for p in latent:
        spec = load_config(p).latent.autoencoder
        if "paper/" not in p.as_posix():  # paper configs point at the user's own VAE folder
            assert (p.parent / spec).is_file() and is_autoencoder_config(p.parent / spec)
