"""Issue 12 item 3: the training knobs of diffusers' / kohya's scripts (Min-SNR-γ, timestep
densities, offset noise, input perturbation, zero-terminal-SNR β rescaling), combined with E-TSDM:
the condition map acts on the sampled t, the loss weight uses the real t's SNR."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from diffusers.training_utils import compute_snr
from torch import nn

from etsdm import Denoiser, TimestepSharing, make_schedule
from etsdm.config import ConfigError, load_config
from etsdm.losses import TimestepDensity, diffusion_loss, knob_warnings, min_snr_weight, sample_timesteps
from etsdm.schedules import rescale_betas_zero_snr


class Recorder(nn.Module):
    """net(x, c) = 0, remembering its inputs."""

    def forward(self, x, c):
        self.x, self.c = x, c
        return torch.zeros_like(x)


def _denoiser(prediction="eps", etsdm=True):
    sched = make_schedule("linear")
    return Denoiser(Recorder(), sched, prediction, TimestepSharing(100, 5) if etsdm else None)


@pytest.mark.parametrize("betas", [torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64),
                                   DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas.double()])
def test_rescale_betas_zero_snr_equals_diffusers(betas):
    ours = rescale_betas_zero_snr(betas)
    torch.testing.assert_close(ours, rescale_zero_terminal_snr(betas.clone()), rtol=0, atol=1e-12)
    assert ours[-1] == 1.0 and math.isclose(ours[0], betas[0].item(), rel_tol=1e-12)  # ᾱ_0 kept, ᾱ_{T-1} = 0
    if betas[0] == 1e-4:  # the zero-snr schedule is the linear table rescaled
        abar = torch.cumprod(1 - ours, 0)
        torch.testing.assert_close(make_schedule("zero-snr").alphas_cumprod()[:-1], abar[:-1], rtol=0, atol=1e-7)


@pytest.mark.parametrize("prediction, their", [("eps", "epsilon"), ("v", "v_prediction")])
def test_min_snr_weight_equals_diffusers_training_scripts(prediction, their):
    scheduler = DDPMScheduler()
    t = torch.tensor([0, 3, 57, 99, 100, 400, 999])
    snr = compute_snr(scheduler, t).double()
    torch.testing.assert_close(make_schedule("linear").snr(t.double()), snr, rtol=1e-3, atol=0)  # theirs: float32
    weight = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]  # train_text_to_image.py
    weight = weight / snr if their == "epsilon" else weight / (snr + 1)
    torch.testing.assert_close(min_snr_weight(snr, 5.0, prediction), weight)
    assert min_snr_weight(torch.tensor([0.0]), 5.0, "eps").item() == 1.0  # zero SNR: the limit, not 0/0


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_uses_the_real_t_while_the_net_sees_f_t(prediction):
    den = _denoiser(prediction)
    x0, t = torch.randn(3, 4), torch.tensor([5.0, 57.0, 500.0])
    gamma = 5000.0  # between SNR(5) ~ 1.6e3 and SNR(f_T(5) = 0) ~ 1e4, so the two weights differ for every output
    out = diffusion_loss(den, x0, t=t, noise=torch.randn(3, 4), snr_gamma=gamma)
    torch.testing.assert_close(den.net.c, torch.tensor([0.0, 40.0, 500.0]))  # f_T applied to the sampled t
    real = min_snr_weight(den.schedule.snr(t), gamma, prediction).float()
    torch.testing.assert_close(out.total, out.mse * real)
    shared = min_snr_weight(den.schedule.snr(den.condition(t)), gamma, prediction).float()
    assert not torch.allclose(out.total, out.mse * shared)


def test_default_uniform_draws_are_unchanged():
    den = _denoiser()
    t = sample_timesteps(den, 64, generator=torch.Generator().manual_seed(1))
    ref = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(t, ref)


def test_logit_normal_shift_and_range_follow_their_closed_forms():
    den = _denoiser()
    dens = TimestepDensity("logit-normal", logit_mean=-0.5, logit_std=0.8, shift=2.0, min_timestep=10,
                           max_timestep=900)
    t = sample_timesteps(den, 40000, generator=torch.Generator().manual_seed(0), density=dens)
    assert t.min() >= 10 and t.max() <= 899 and torch.equal(t, t.round())
    k, pmf = dens.pmf(den.schedule)
    assert math.isclose(pmf.sum().item(), 1.0, abs_tol=1e-9) and pmf[:10].sum() == 0 and pmf[900:].sum() == 0
    for edge in (100, 300, 600):  # empirical CDF vs Φ((logit(g⁻¹(u)) - m)/s)
        assert abs((t < edge).double().mean().item() - dens.prob_below(den.schedule, edge)) < 0.01
    u = TimestepDensity("uniform", shift=3.0).sample_u(40000, torch.Generator().manual_seed(0))
    assert abs(u.median().item() - 0.75) < 0.01  # shift g(0.5) = 3·0.5/(1 + 2·0.5)
    with pytest.raises(ValueError, match="min_timestep"):
        TimestepDensity(min_timestep=500, max_timestep=400).bounds(den.schedule)


def test_noise_offset_and_input_perturbation():
    den = _denoiser(etsdm=False)
    x0, t, noise = torch.zeros(2, 3, 4, 4), torch.tensor([999.0, 999.0]), torch.randn(2, 3, 4, 4)
    diffusion_loss(den, x0, t=t, noise=noise.clone(), noise_offset=0.5, generator=torch.Generator().manual_seed(0))
    sigma = den.schedule.sigma(999.0).item()
    shift = den.net.x / sigma - noise  # x0 = 0: x_t = σ (ε + offset·n)
    off = 0.5 * torch.randn(2, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shift, off.expand_as(shift), rtol=0, atol=1e-5)  # one value per example and channel
    out = diffusion_loss(den, x0, t=t, noise=noise, input_perturbation=0.1, generator=torch.Generator().manual_seed(0))
    pert = 0.1 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(den.net.x, sigma * (noise + pert), rtol=0, atol=1e-5)  # input perturbed ...
    torch.testing.assert_close(out.mse, (noise**2).mean((1, 2, 3)))  # ... the target (ε) is not


def test_settings_that_make_etsdm_a_noop_warn():
    with pytest.warns(UserWarning, match="min_timestep=100 >= E-TSDM's t̃=100"):
        load_config(None, ["diffusion.min_timestep=100"])  # the packaged config is E-TSDM, t̃ = 100
    with pytest.warns(UserWarning, match="almost a no-op"):
        load_config(None, ["diffusion.time_sampling=logit-normal", "diffusion.logit_mean=3", "diffusion.logit_std=0.5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["diffusion.time_sampling=logit-normal", "diffusion.snr_gamma=5"])
        load_config(None, ["diffusion.min_timestep=500", "diffusion.condition.kind=identity"])
    sched = make_schedule("linear")
    assert knob_warnings(TimestepSharing(100, 5), sched, TimestepDensity(min_timestep=99)) == []
    with pytest.raises(ConfigError, match="min_timestep"):
        load_config(None, ["diffusion.min_timestep=600", "diffusion.max_timestep=500"])


def test_config_knobs_reach_the_loss():
    with pytest.warns(UserWarning, match="almost a no-op"):  # SD3's shift 3 on logit-normal: 5e-4 below t̃
        cfg = load_config(None, ["diffusion.snr_gamma=5", "diffusion.noise_offset=0.1",
                                 "diffusion.timestep_shift=3", "diffusion.time_sampling=logit-normal"])
    assert cfg.diffusion.loss_knobs() == {"reg_weight": 0.0, "snr_gamma": 5.0, "noise_offset": 0.1,
                                          "input_perturbation": 0.0}
    assert cfg.diffusion.density() == TimestepDensity("logit-normal", 0.0, 1.0, 3.0, None, None)


# --- item 4: see what you configured --------------------------------------------------------------
def test_training_view_numbers():
    from etsdm.training_view import training_view

    plain = training_view(load_config(None))
    t = torch.tensor(plain["t"])
    torch.testing.assert_close(torch.tensor(plain["condition"]), TimestepSharing(100, 5)(t))
    assert math.isclose(plain["density_share_below_t_tilde"], 0.1) and plain["warnings"] == []
    weighted = training_view(load_config(None, ["diffusion.snr_gamma=5"]))
    assert math.isclose(sum(weighted["density"]), 1.0) and weighted["weight"][0] < 1e-3  # γ/SNR(0) ~ 5e-4
    assert weighted["effective_share_below_t_tilde"] < 0.5 * weighted["density_share_below_t_tilde"]  # Min-SNR


def test_schedules_config_figure_from_a_run(tmp_path):
    from click.testing import CliRunner

    from etsdm.cli import main
    from etsdm.config import dump_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(None, ["diffusion.time_sampling=logit-normal"])))
    res = CliRunner().invoke(main, ["schedules", "--config", str(run), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    assert "E-TSDM band [0, 100): 1.4% of the training times" in res.output
    assert (tmp_path / "fig" / "training.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "fig" / "training.json").read_text())["time_sampling"] == "logit-normal"
    res = CliRunner().invoke(main, ["schedules", "--config", str(tmp_path / "fig")])  # no config there
    assert res.exit_code == 2 and "no config here" in res.output
