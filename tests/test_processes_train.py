"""Training, configs and the CLI on the EDM and flow-matching processes (issue 9).

* the toy configs train through ``etsdm train`` and sample through ``etsdm sample`` with the
  run's own sampler (Heun / Euler); resume is bit-exact on EDM;
* the condition that reaches the network in training is the one every sampler feeds it: both equal
  the closed form net_time(f(t)) (EDM: ¼ ln of the left end of t's log-uniform cell);
* loss targets against closed forms: EDM's F* with c_out²·λ(σ) = 1 (Karras et al. Table 1 / Eq. 8),
  the flow velocity ε - x0, the log-normal and logit-normal densities, Min-SNR's x0 gain, DDPM-r's
  Δt, the net's time scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from etsdm.cli import main
from etsdm.config import ConfigError, configs_dir, load_config
from etsdm.denoiser import Denoiser
from etsdm.losses import TimestepDensity, diffusion_loss, min_snr_loss_weight, sample_timesteps, x0_gain2
from etsdm.runs import LoadedModel, build_denoiser, default_sampler, generate, net_time_scale
from etsdm.schedules import make_schedule
from etsdm.train.checkpoint import latest_checkpoint
from etsdm.train.trainer import Trainer

TINY = ["model.overrides={base_channels: 8, channel_mult: [1, 1], layers_per_block: 1, attention_resolutions: [4], "
        "attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}", "train.batch_size=8", "train.log_every=1",
        "train.tensorboard=false", "sample.num=4", "sample.batch=4", "sample.nfe=3"]
pytestmark = pytest.mark.usefixtures("single_thread")


def toy(name: str, *extra: str, steps: int = 2):
    return load_config(configs_dir() / f"{name}.yaml", [*TINY, f"train.steps={steps}", *extra])


def _set(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


# --- the toy configs through the CLI -------------------------------------------------------------------
@pytest.mark.parametrize(("name", "sampler"), [("edm_digits_etsdm", "heun"), ("flow_digits_etsdm", "euler")])
def test_toy_config_trains_and_samples_with_its_own_sampler(tmp_path, name, sampler):
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", str(configs_dir() / f"{name}.yaml"), "--out", str(run), "--no-progress",
                                    *_set([*TINY, "train.steps=2"])])
    assert res.exit_code == 0, res.output
    assert (run / "samples" / "step_00000002.png").is_file()
    res = CliRunner().invoke(main, ["sample", str(run), "--num", "2"])  # no --sampler: the run's own (nfe 3)
    assert res.exit_code == 0, res.output
    assert f"sampler={sampler}, nfe=3" in res.output
    x = np.load(run / "samples" / f"{sampler}-3-seed0.npz")["samples"]
    assert x.shape == (2, 1, 8, 8) and np.isfinite(x).all()


def test_vp_runs_keep_ddim_50_as_the_cli_default():
    cfg = load_config(None)
    model = LoadedModel(build_denoiser(cfg, lambda x, c: x), cfg.build_schedule(), cfg, "vp", "digits")
    assert default_sampler(model) == ("ddim", 50)
    edm = toy("edm_digits_baseline")
    model = LoadedModel(build_denoiser(edm, lambda x, c: x), edm.build_schedule(), edm, "edm", "digits")
    assert default_sampler(model) == ("heun", 3)  # TINY's sample.nfe


def test_edm_resume_is_bit_exact(tmp_path):
    Trainer(toy("edm_digits_etsdm", steps=4), tmp_path / "full", progress=False).train()
    Trainer(toy("edm_digits_etsdm", steps=2), tmp_path / "split", progress=False).train()
    Trainer(toy("edm_digits_etsdm", steps=4), tmp_path / "split", resume=True, progress=False).train()
    from safetensors.torch import load_file

    a, b = latest_checkpoint(tmp_path / "full"), latest_checkpoint(tmp_path / "split")
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / f)), load_file(str(b / f))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    w0 = load_file(str(tmp_path / "split" / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert any(not torch.equal(w0[k], load_file(str(a / "model.safetensors"))[k]) for k in w0)


@pytest.mark.parametrize("field", ["diffusion.sigma_data=0.5", "schedule.sigma_max=40", "diffusion.p_std=1.0"])
def test_resume_refuses_a_change_of_the_new_run_defining_fields(tmp_path, field):
    Trainer(toy("edm_digits_baseline", steps=1), tmp_path, progress=False).train()
    with pytest.raises(ConfigError, match=field.split("=")[0].replace(".", r"\.")):
        Trainer(toy("edm_digits_baseline", field, steps=2), tmp_path, resume=True, progress=False)


# --- the condition: training == sampling == closed form ----------------------------------------------------
class Spy(nn.Module):
    """Records every condition c it is called with; output 0 (a valid F / velocity)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, c):
        self.seen.append(c.detach().clone())
        return x * self.w


def _edm_expected_condition(t: torch.Tensor, sigma_tilde: float = 0.34226, sigma_min: float = 0.002, n: int = 5):
    """¼ ln f(σ): f(σ) = σ_min (σ̃/σ_min)^{i/n}, the left end of σ's cell uniform in ln σ, for σ < σ̃."""
    i = torch.floor(n * torch.log(t / sigma_min) / math.log(sigma_tilde / sigma_min)).clamp(0, n - 1)
    left = sigma_min * (sigma_tilde / sigma_min) ** (i / n)
    return 0.25 * torch.log(torch.where(t < sigma_tilde, left, t))


def test_edm_condition_in_training_and_in_every_sampler_is_the_closed_form(tmp_path):
    cfg = toy("edm_digits_etsdm", "train.batch_size=64")
    spy = Spy()
    trainer = Trainer(cfg, tmp_path, net=spy, progress=False)
    x0 = torch.zeros(64, 1, 8, 8)
    t = trainer.loss(x0, micro_step=0).t
    assert (t < 0.34).sum() > 5  # the log-normal density reaches the band
    torch.testing.assert_close(spy.seen[-1], _edm_expected_condition(t).float())
    model = LoadedModel(build_denoiser(cfg, spy), cfg.build_schedule(), cfg, "spy", "digits", shape=(1, 8, 8))
    for sampler, nfe in (("heun", 7), ("euler", 6), ("dpm-solver++2m", 6), ("ddim", 5)):
        spy.seen.clear()
        generate(model, 2, sampler=sampler, nfe=nfe, timestep_spacing="karras")
        assert len(spy.seen) == nfe
        # Karras et al. Eq. 5 (ρ = 7): Heun's N points take 2N - 1 NFE; DPM-Solver++ ends at σ_min unevaluated
        points = {"heun": (nfe + 1) // 2, "dpm-solver++2m": nfe + 1}.get(sampler, nfe)
        ramp = torch.linspace(0, 1, points, dtype=torch.float64)
        sigma = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
        expected = np.round(_edm_expected_condition(sigma).numpy(), 5).tolist()
        got = {round(float(c[0]), 5) for c in spy.seen}
        assert got == set(expected[:nfe] if sampler != "heun" else expected), sampler
        assert all(torch.all(c == c[0]) for c in spy.seen)


def test_flow_condition_in_training_is_the_left_end_of_a_uniform_cell(tmp_path):
    spy = Spy()
    trainer = Trainer(toy("flow_digits_etsdm", "train.batch_size=64"), tmp_path, net=spy, progress=False)
    t = trainer.loss(torch.zeros(64, 1, 8, 8), micro_step=0).t
    t_tilde = float(trainer.denoiser.condition.t_tilde)
    assert abs(t_tilde - 0.25499) < 1e-4  # the paper's band end by equal log-SNR
    width = t_tilde / 5
    expected = torch.where(t < t_tilde, torch.floor(t / width) * width, t)
    torch.testing.assert_close(spy.seen[-1].double(), expected, atol=1e-6, rtol=1e-6)


# --- targets and weights against closed forms -------------------------------------------------------------
def test_edm_loss_is_lambda_weighted_x0_error_and_c_out2_lambda_is_one():
    sched, sd = make_schedule("edm"), 0.75
    net = nn.Conv2d(1, 1, 3, padding=1)
    den = Denoiser(lambda x, c: net(x) + c.reshape(-1, 1, 1, 1), sched, "edm", sigma_data=sd)
    x0, eps = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    sigma = torch.tensor([0.002, 0.05, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    with torch.no_grad():
        out = diffusion_loss(den, x0, t=sigma, noise=eps)
        d = den.x0(sched.diffuse(x0, sigma, eps), sigma)
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2  # EDM Table 1: λ(σ)
    c_out2 = x0_gain2(sched, sigma, "edm", sd)  # (∂D/∂F)² of the code = c_out²
    torch.testing.assert_close(c_out2 * lam, torch.ones_like(sigma))
    torch.testing.assert_close(out.mse.double(), lam * ((d - x0) ** 2).mean((1, 2, 3)).double(), rtol=2e-4, atol=0)


def test_flow_target_is_eps_minus_x0():
    den = Denoiser(lambda x, c: x, make_schedule("flow"), "flow")
    x0, eps, t = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(den.target(x0, eps, t), eps - x0)


@pytest.mark.parametrize("process", ["edm", "flow", "linear"])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0", "edm", "flow"])
def test_min_snr_gain_is_the_denoisers_own_x0_jacobian(process, prediction):
    """x0_gain2 = (∂x̂0/∂out)² in closed form == the Denoiser's conversion probed at out = 1, x = 0."""
    sched = make_schedule(process, continuous=True) if process == "linear" else make_schedule(process)
    t = torch.tensor([0.01, 0.2, 0.6, 0.9], dtype=torch.float64) * (80 if process == "edm" else 1)
    den = Denoiser(lambda x, c: torch.ones_like(x), sched, prediction, sigma_data=0.7)
    probe = den.x0(torch.zeros(4, 1, dtype=torch.float64), t)[:, 0] ** 2
    torch.testing.assert_close(x0_gain2(sched, t, prediction, 0.7), probe)
    w = min_snr_loss_weight(sched, t, 5.0, prediction, 0.7)
    torch.testing.assert_close(w, sched.snr(t).clamp(max=5.0) * probe)


def test_log_normal_density_is_edms_and_logit_normal_on_flow():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    dens = TimestepDensity("log-normal")
    z = torch.randn(1000, generator=g(), dtype=torch.float64)
    edm = sample_timesteps(Denoiser(None, make_schedule("edm")), 1000, generator=g(), density=dens)
    torch.testing.assert_close(edm, torch.exp(-1.2 + 1.2 * z))  # σ = exp(P_mean + P_std z), unclipped
    flow = sample_timesteps(Denoiser(None, make_schedule("flow")), 1000, generator=g(), density=dens)
    torch.testing.assert_close(flow, torch.sigmoid(-1.2 + 1.2 * z))  # logit t ~ N(P_mean, P_std²)
    big = sample_timesteps(Denoiser(None, make_schedule("edm")), 40000, generator=g(), density=dens)
    for s in (0.05, 0.342, 2.0):
        assert abs((big < s).double().mean().item() - dens.prob_below(make_schedule("edm"), s)) < 0.01
    k, pmf = dens.pmf(make_schedule("linear"))  # discrete VP: nearest timestep, all mass on 0..T-1
    assert abs(float(pmf.sum()) - 1.0) < 1e-12 and len(k) == 1000
    lin = sample_timesteps(Denoiser(None, make_schedule("linear")), 40000, generator=g(), density=dens)
    assert abs((lin < 100).double().mean().item() - dens.prob_below(make_schedule("linear"), 100)) < 0.01


def test_sd3_shift_on_flow_times():
    dens = TimestepDensity("logit-normal", shift=3.0)
    t = sample_timesteps(Denoiser(None, make_schedule("flow")), 20000, generator=torch.Generator().manual_seed(0),
                         density=dens)
    u = torch.sigmoid(torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    torch.testing.assert_close(t, 1e-5 + (1 - 1e-5) * (3 * u / (1 + 2 * u)))  # t' = s t / (1 + (s - 1) t)


def test_ddpm_r_step_is_sigma_min_on_edm():
    sched = make_schedule("edm")
    den = Denoiser(lambda x, c: x * 0 + c.reshape(-1, 1), sched, "edm")
    t = torch.tensor([0.01, 1.0], dtype=torch.float64)
    out = diffusion_loss(den, torch.zeros(2, 4), t=t, noise=torch.zeros(2, 4), reg_weight=1.0)
    dc = 0.25 * torch.log((t + 0.002) / t)  # c_noise(σ + Δσ) - c_noise(σ), Δσ = σ_min
    torch.testing.assert_close(out.reg.double(), dc.abs() * 2 / 0.002, rtol=1e-4, atol=0)  # ||·||₂ over 4 dims


def test_net_time_scale_spreads_c_noise_over_1000_units():
    edm = make_schedule("edm")
    scale = net_time_scale(edm)
    span = scale * float(edm.net_time(80.0) - edm.net_time(0.002))
    assert abs(span - 1000) < 1e-9 and 377 < scale < 378
    assert net_time_scale(make_schedule("flow")) == 1000 and net_time_scale(make_schedule("linear")) == 1


# --- config errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["schedule.name=edm"], r"schedule\.continuous: schedule\.name 'edm' is a continuous-time process"),
        (["diffusion.prediction=flow"], r"diffusion\.prediction: 'flow' .* needs a continuous-time schedule"),
        (["diffusion.sigma_data=1"], r"diffusion\.sigma_data applies to diffusion\.prediction: edm only"),
        (["diffusion.p_mean=0"], r"diffusion\.p_mean / p_std apply to diffusion\.time_sampling: log-normal only"),
        (["schedule.sigma_max=10"], r"schedule\.sigma_min / sigma_max apply to schedule\.name: edm only"),
        (["schedule.name=flow", "schedule.continuous=true", "diffusion.condition.kind=remap"],
         r"diffusion\.condition\.kind: 'remap' acts on VP's normalised time"),
        (["diffusion.condition.kind=identity", "diffusion.condition.space=log-snr"],
         r"diffusion\.condition\.space: 'log-snr' applies to diffusion\.condition\.kind: etsdm only"),
        (["diffusion.condition.space=sigma"],
         r"diffusion\.condition\.space: 'sigma' is not allowed; allowed: t, log-snr"),
        (["diffusion.time_sampling=log-normal", "diffusion.timestep_shift=3"], r"'log-normal' takes no shift"),
        (["schedule.name=edm", "schedule.continuous=true", "diffusion.prediction=edm",
          "diffusion.input_perturbation=0.1"], r"diffusion\.input_perturbation: not with diffusion\.prediction: edm"),
        (["schedule.name=edm", "schedule.continuous=true", "schedule.sigma_min=90"],
         r"schedule\.sigma_min \(90\.0\) must be < schedule\.sigma_max"),
    ],
)
def test_bad_process_combinations_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["sample.sampler=ddim", "sample.nfe=20", *overrides])


def test_allowed_but_doubtful_combinations_warn():
    with pytest.warns(UserWarning, match=r"prediction: eps with schedule\.name: edm feeds the network x = x0 \+ σε"):
        load_config(None, ["schedule.name=edm", "schedule.continuous=true", "sample.sampler=heun", "sample.nfe=9"])
    with pytest.warns(UserWarning, match=r"prediction: eps with schedule\.name: flow: α = 0 at t = 1"):
        load_config(None, ["schedule.name=flow", "schedule.continuous=true", "sample.sampler=euler", "sample.nfe=9"])
    cfg = load_config(None, ["diffusion.prediction=edm", "diffusion.sigma_data=0.7"])  # EDM preconditioning on VP
    assert cfg.diffusion.prediction == "edm"
