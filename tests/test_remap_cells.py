"""Table A5, the remap alternative (Appendix D.3.3): both maps are finite everywhere, U_λ is the
paper's range, and every one of the 8 cells (map x training sampling x inference grid) trains and
samples to finite numbers (tiny MLP on the 2-D Gaussian mixture, a few steps)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import etsdm.nets  # noqa: F401  (imported here, at collection: its first import takes seconds)
from etsdm import GaussianMixture, Remap, TimestepSharing, diffusion_loss, sample_timesteps
from etsdm.conditioning import remap_lambda_plan, remap_lambda_times
from etsdm.config import ConfigError, configs_dir, load_config
from etsdm.denoiser import Denoiser
from etsdm.runs import LoadedModel, build_denoiser, build_net, generate
from etsdm.schedules import make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ("inverse", "inverse-sigmoid")
CELLS = sorted((configs_dir() / "paper" / "alternatives").glob("ffhq_remap-*.yaml"))


def _times(T: int | None) -> torch.Tensor:
    if T is not None:
        return torch.arange(-1, T + 1, dtype=torch.float64)  # one step past both ends too
    return torch.cat([torch.linspace(0, 1, 10001, dtype=torch.float64), torch.tensor([1e-300, 1 - 1e-16])])


# ----------------------------------------------------------------------------------------------
# The maps
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1000, 50, None])
def test_remap_is_finite_and_inside_its_range_at_every_time(kind, T):
    """τ = 0 and τ = 1 included: logit(1) = inf used to reach the network (NaN loss)."""
    m = Remap(kind, T=T)
    lam = m(_times(T))
    assert bool(torch.isfinite(lam).all())
    lo = 1.0 if kind == "inverse" else -m.K
    assert float(lam.min()) >= lo and float(lam.max()) <= m.K
    assert float(m(torch.tensor(float(m.T - 1 if T else 1.0)))) == pytest.approx(1.0 if kind == "inverse" else m.K)
    assert bool(torch.isfinite(m.inverse(torch.tensor([-math.inf, -1e9, 0.0, 1e9, math.inf]))).all())


@pytest.mark.parametrize("kind", KINDS)
def test_default_k_keeps_every_timestep_distinct_and_u_lambda_is_the_papers(kind):
    m = Remap(kind, T=1000)
    lam = m(torch.arange(1000, dtype=torch.float64))
    sign = -1 if kind == "inverse" else 1
    assert bool((sign * lam.diff() > 0).all())  # strictly monotone: no two timesteps share a λ
    if kind == "inverse":
        assert m.K == 1000 and m.lambda_range() == (0.0, 1000.0)  # U[0, K]
    else:  # U[-K, K], K = logit(1 - 1/(2T)): λ(T-1) = K, λ(0) = logit(1/T) > -K
        assert m.K == pytest.approx(math.log(1999)) and m.lambda_range() == (-m.K, m.K)
        assert float(lam[-1]) == pytest.approx(m.K) and -m.K < float(lam[0]) < -m.K + 1
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="remap_k"):
            Remap(kind, K=bad)


def test_lambda_training_does_not_pile_up_at_the_end_of_time():
    """λ ~ U[-K, K] for inverse-sigmoid: t = T-1 holds ~2% of the draws (was ~99%) and t = 0 ~7%."""
    d = Denoiser(lambda x, c: x, make_schedule("linear"), condition=Remap("inverse-sigmoid", T=1000))
    t = sample_timesteps(d, 20000, generator=torch.Generator().manual_seed(0), sampling="remap-lambda")
    assert bool((t == t.round()).all()) and int(t.min()) == 0 and int(t.max()) == 999
    assert 0.01 < float((t == 999).double().mean()) < 0.04
    assert 0.04 < float((t == 0).double().mean()) < 0.10
    middle = (math.log(899.5 / 100.5) - math.log(101.5 / 898.5)) / (2 * math.log(1999))  # λ-share of t in 101..899
    assert float(((t > 100) & (t < 900)).double().mean()) == pytest.approx(middle, abs=0.015)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("continuous", [False, True])
def test_lambda_grid_is_uniform_in_lambda(kind, continuous):
    s = make_schedule("linear", continuous=continuous)
    m = Remap(kind, T=None if continuous else s.T)
    ts = remap_lambda_times(m, s, 40)
    assert ts[0] == s.t_max and ts[-1] == s.t_min and all(b < a for a, b in zip(ts, ts[1:], strict=False))
    lam = m(torch.tensor(ts, dtype=torch.float64))
    if continuous:  # exactly the 41 evenly spaced λ
        step = float(lam[-1] - lam[0]) / 40
        assert float((lam.diff() - step).abs().max()) < 1e-9 * max(1.0, abs(step))
    else:  # the distinct timesteps nearest (in λ, by brute force) to 41 evenly spaced λ
        even = torch.linspace(float(lam[0]), float(lam[-1]), 41, dtype=torch.float64)
        grid = m(torch.arange(s.T, dtype=torch.float64))
        nearest = {float((grid - v).abs().argmin()) for v in even}
        assert set(ts) == nearest and sorted(ts, reverse=True) == ts
    times, orders = remap_lambda_plan(m, s, "dpm-solver++2m", 41)
    assert times[:-1] == ts and times[-1] == s.t_data and len(orders) == len(times) - 1
    with pytest.raises(ValueError, match="dpm-solver-2"):
        remap_lambda_plan(m, s, "dpm-solver-2", 41)
    with pytest.raises(ValueError, match="needs a Remap"):
        remap_lambda_plan(TimestepSharing(T=None if continuous else s.T), s, "ddpm", 41)


# ----------------------------------------------------------------------------------------------
# The 8 cells of Table A5, end to end at toy scale
# ----------------------------------------------------------------------------------------------
def test_there_are_eight_cells():
    cells = {(c.diffusion.condition.remap, c.diffusion.time_sampling, c.diffusion.condition.remap_grid)
             for c in map(load_config, CELLS)}
    assert cells == {(k, tr, inf) for k in KINDS for tr in ("uniform", "remap-lambda") for inf in ("t", "lambda")}


TOY = ["data.name=gmm", "data.root=null", "data.resolution=null", "data.channels=null", "data.hflip=false",
       "model.name=mlp", "model.preset=tiny", "train.batch_size=64"]


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("path", CELLS, ids=lambda p: Path(p).stem.removeprefix("ffhq_remap-"))
def test_every_cell_trains_and_samples_finite(path, continuous, ring: GaussianMixture):
    cfg = load_config(path, TOY + [f"schedule.continuous={str(continuous).lower()}"])
    torch.manual_seed(0)
    den = build_denoiser(cfg, build_net(cfg, (2,)))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # a few training steps with the cell's training sampling
        out = diffusion_loss(den, ring.sample(64, generator=g).float(), generator=g,
                             sampling=cfg.diffusion.time_sampling)
        assert bool(torch.isfinite(out.total).all()) and bool(torch.isfinite(out.t).all())
        den.zero_grad()
        out.total.mean().backward()
        with torch.no_grad():  # a plain SGD step (no optimiser: its first use costs seconds)
            for p in den.parameters():
                assert bool(torch.isfinite(p.grad).all())
                p -= 1e-3 * p.grad
    model = LoadedModel(den.eval(), den.schedule, cfg, cfg.name, "gmm", shape=(2,))
    seen: list[float] = []
    x = generate(model, 16, sampler="ddpm", nfe=12, callback=lambda info: seen.append(info.t))
    assert x.shape == (16, 2) and bool(torch.isfinite(x).all())
    if cfg.diffusion.condition.remap_grid == "lambda":  # the λ-uniform grid was walked
        assert seen == remap_lambda_plan(den.condition, den.schedule, "ddpm", 12)[0][:-1]
    else:  # the sampler's own grid
        assert len(seen) == 12 and seen != remap_lambda_plan(den.condition, den.schedule, "ddpm", 12)[0][:-1]


def test_lambda_grid_needs_a_remap_map():
    with pytest.raises(ConfigError, match="remap_grid"):
        load_config(None, ["diffusion.condition.remap_grid=lambda"])


def test_lambda_grid_runs_record_the_evaluations_they_walk():
    """A remap λ-grid run records nfe = the evaluations walked (repeated timesteps dropped), the requested
    nfe beside it, no ignored conventions, and refuses an explicit timestep spacing (review item 4)."""
    from etsdm.runs import describe_sampling

    cfg = load_config(CELLS[0], TOY + ["diffusion.condition.remap=inverse", "diffusion.condition.remap_grid=lambda"])
    den = build_denoiser(cfg, build_net(cfg, (2,)))
    model = LoadedModel(den.eval(), den.schedule, cfg, cfg.name, "gmm", shape=(2,))
    times, orders = remap_lambda_plan(den.condition, den.schedule, "ddim", 50)
    assert len(orders) < 50  # discrete time: repeats dropped
    d = describe_sampling(model, "ddim", 50)
    assert d["nfe"] == len(orders) and d["nfe_requested"] == 50 and d["timesteps"] == times
    assert d["grid"] == "remap λ-uniform" and not {"timestep_spacing", "denoise_to_zero", "order_plan"} & set(d)
    for bad in ({"timestep_spacing": "leading"}, {"spacing": "trailing"}, {"denoise_to_zero": False}):
        with pytest.raises(ValueError, match="λ-uniform grid"):
            describe_sampling(model, "ddim", 50, **bad)
        with pytest.raises(ValueError, match="λ-uniform grid"):
            generate(model, 2, sampler="ddim", nfe=50, **bad)
