"""Conditioning, one way through everything (issue 10): the network's keyword inputs ``cond``
(class labels, a low-resolution image) reach the raw network ``net(x, c, **cond)`` at every
evaluation — in training (the loss and DDPM-r's second call), in every registered sampler and
evaluation mode (precomputed Denoiser path, estimate-only models, plain ε-callables; churn,
clipping and the exact α = 0 points included), in the diffusers-scheduler loop, the captured
sampler, and the Lipschitz / stability measurements with rows matched to the x0 rows they use.

The recording network's output depends on its labels, so a lost, reordered or mismatched cond
changes the numbers these tests compare exactly.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from cond_nets import cond_net as label_net
from etsdm import SAMPLER_REGISTRY, Denoiser, diffusion_loss, make_schedule, sample
from etsdm.analysis.lipschitz import lipschitz_curve
from etsdm.analysis.stability import perturbation_error
from etsdm.compiled import CapturedForwards, CapturedSampler
from etsdm.conditioning import Identity, process_sharing
from etsdm.diffusers_sampling import generate_diffusers, sample_diffusers
from etsdm.samplers import init_noise_sigma
from etsdm.samplers import run as sampler_run

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
B, D, NFE = 3, 2, 6
LABELS = torch.tensor([2, 0, 1])
LOWRES = torch.tensor([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]], dtype=F64)


class Recorder:
    """Wraps a network; records the cond of every call."""

    def __init__(self, net=label_net):
        self.net, self.calls = net, []

    def __call__(self, x, c, **cond):
        self.calls.append({key: value.clone() for key, value in cond.items()})
        return self.net(x, c, **cond)


def _assert_every_call_got(rec: Recorder, cond: dict[str, torch.Tensor], calls: int) -> None:
    assert len(rec.calls) == calls
    for got in rec.calls:
        assert sorted(got) == sorted(cond)
        for key, value in cond.items():
            assert torch.equal(got[key], value), key


PROCESSES: dict[str, tuple[Any, str]] = {
    "linear": (lambda: make_schedule("linear", T=1000), "eps"),
    "cosine": (lambda: make_schedule("cosine", continuous=True), "v"),  # α = 0 at t = 1: the exact path
    "edm": (lambda: make_schedule("edm"), "edm"),
    "flow": (lambda: make_schedule("flow"), "flow"),  # α = 0 at t = 1: the exact path
}


class EstimateDenoiser(Denoiser):
    """Overrides ``estimate`` (so sample() calls it as is: mode "estimate"), passing cond on."""

    def estimate(self, x, t, c=None, **cond):
        return super().estimate(x, t, c, **cond)


def _model(mode: str, net, schedule, prediction: str):
    """A model sample() evaluates in ``mode``; E-TSDM's sharing as the condition map."""
    if mode == "estimate":
        return EstimateDenoiser(net, schedule, prediction, process_sharing(schedule))
    den = Denoiser(net, schedule, prediction, process_sharing(schedule))
    if mode == "denoiser":
        return den

    def eps_model(x, t, **cond):  # a plain ε-callable
        return den(x, t, **cond)

    eps_model.prediction = prediction
    return eps_model


def _noise(schedule) -> torch.Tensor:
    return init_noise_sigma(schedule) * torch.randn(B, D, generator=torch.Generator().manual_seed(5), dtype=F64)


@pytest.mark.parametrize("mode", ["denoiser", "estimate", "eps"])
@pytest.mark.parametrize("process", list(PROCESSES))
@pytest.mark.parametrize("sampler", list(SAMPLER_REGISTRY))
def test_cond_reaches_every_evaluation_of_every_sampler(sampler, process, mode):
    """Every network evaluation gets the cond, in every mode; the sample equals the one of the same
    net with the cond bound beforehand (so nothing but the passing changed), with clipping, churn
    (euler / heun), η (ddim) and exact α = 0 points (cosine-v, flow) on the way."""
    make, prediction = PROCESSES[process]
    schedule = make()
    cond = {"labels": LABELS, "lowres": LOWRES}
    options: dict[str, Any] = {"s_churn": 2.0} if SAMPLER_REGISTRY[sampler].churn else {}
    options |= {"eta": 0.5} if sampler == "ddim" else {}
    for clip in ("none", "static"):
        rec = Recorder()
        model = _model(mode, rec, schedule, prediction)
        assert sampler_run._mode(model) == mode
        got = sample(model, _noise(schedule), schedule, sampler, NFE, clip=clip, cond=cond,
                     generator=torch.Generator().manual_seed(1), **options)
        _assert_every_call_got(rec, cond, NFE)
        bound = _model(mode, functools.partial(label_net, **cond), schedule, prediction)
        ref = sample(bound, _noise(schedule), schedule, sampler, NFE, clip=clip,
                     generator=torch.Generator().manual_seed(1), **options)
        assert torch.equal(got, ref), (clip, (got - ref).abs().max())


def test_sample_without_cond_calls_the_net_without_keywords():
    rec = Recorder()
    schedule = make_schedule("linear", T=1000)
    sample(Denoiser(rec, schedule), _noise(schedule), schedule, "ddim", NFE)
    sample(Denoiser(rec, schedule), _noise(schedule), schedule, "ddim", NFE, cond={})
    assert rec.calls == [{}] * (2 * NFE)


def test_cond_rows_must_match_the_batch():
    schedule = make_schedule("linear", T=1000)
    den = Denoiser(label_net, schedule)
    with pytest.raises(ValueError, match=r"sample: cond\['labels'\] must be a tensor with one row per example \(3"):
        sample(den, _noise(schedule), schedule, "ddim", NFE, cond={"labels": LABELS[:2]})
    with pytest.raises(ValueError, match=r"diffusion_loss: cond\['labels'\]"):
        diffusion_loss(den, torch.zeros(B, D), cond={"labels": 1})


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reg_weight", [0.0, 0.5])
@pytest.mark.parametrize("prediction", ["eps", "v", "edm"])
def test_cond_reaches_the_network_in_training(prediction, reg_weight):
    """diffusion_loss hands cond to the network's call (and DDPM-r's second call): equal, bitwise,
    to the loss of the same net with the cond bound; E-TSDM's map acts on t only."""
    schedule = make_schedule("linear", T=1000)
    sharing = process_sharing(schedule)
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(2))
    cond = {"labels": LABELS, "lowres": LOWRES.float()}
    rec = Recorder()
    kw = {"generator": torch.Generator().manual_seed(3), "reg_weight": reg_weight}
    got = diffusion_loss(Denoiser(rec, schedule, prediction, sharing), x0, cond=cond, **kw)
    _assert_every_call_got(rec, cond, 2 if reg_weight else 1)
    kw["generator"] = torch.Generator().manual_seed(3)
    ref = diffusion_loss(Denoiser(functools.partial(label_net, **cond), schedule, prediction, sharing), x0, **kw)
    assert torch.equal(got.total, ref.total) and torch.equal(got.t, ref.t)
    other = diffusion_loss(Denoiser(label_net, schedule, prediction, sharing), x0, t=got.t,
                           noise=None, generator=torch.Generator().manual_seed(3), reg_weight=reg_weight,
                           cond={"labels": LABELS.flip(0), "lowres": cond["lowres"]})
    assert not torch.equal(other.total, got.total)  # the labels matter: a test that can fail


# ----------------------------------------------------------------------------------------------
# Measurements: rows matched to the x0 rows
# ----------------------------------------------------------------------------------------------
def test_lipschitz_curve_with_cond_equals_a_manual_loop():
    """K(t, t′) with per-sample labels equals the loop over (t, sample) with that sample's label;
    batch_size 4 packs pairs of different samples and times into one call (rows tiled)."""
    schedule = make_schedule("linear", T=1000)
    den = Denoiser(label_net, schedule, "eps", Identity())
    n, times, dt = 3, torch.tensor([0.0, 5.0, 40.0, 300.0], dtype=F64), 1.0
    x0 = torch.randn(n, D, generator=torch.Generator().manual_seed(4), dtype=F64)
    labels = torch.tensor([1, 4, 0])
    curve = lipschitz_curve(den, x0, schedule, times, dt=dt, batch_size=4, cond={"labels": labels},
                            generator=torch.Generator().manual_seed(6))
    assert curve.calls == 6  # 12 pairs, 2 per call
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    expected = torch.zeros(len(times), dtype=F64)
    for m, t in enumerate(times.tolist()):
        for i in range(n):
            x_t = schedule.diffuse(x0[i : i + 1], torch.tensor([t], dtype=F64), noise[i : i + 1])
            a = den.net_output(x_t, t, labels=labels[i : i + 1])
            b = den.net_output(x_t, t + dt, labels=labels[i : i + 1])
            expected[m] += (a - b).norm() / dt / n
    torch.testing.assert_close(curve.K, expected, rtol=1e-12, atol=1e-14)
    unlabelled = lipschitz_curve(den, x0, schedule, times, dt=dt, batch_size=4,
                                 generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(unlabelled.K, curve.K)  # the labels matter


def test_perturbation_error_with_cond_equals_a_manual_loop():
    """The stability error with per-sample labels and lowres equals the per-example loop; batch_size 6
    gives chunks of 2 examples × (1 + 2 scales) rows (cond tiled like the perturbed copies)."""
    schedule = make_schedule("linear", T=1000)
    den = Denoiser(label_net, schedule, "v")
    n, t, scales = 5, 100.0, [0.1, 0.3]
    x0 = torch.randn(n, D, generator=torch.Generator().manual_seed(8), dtype=F64)
    cond = {"labels": torch.tensor([3, 0, 2, 2, 1]),
            "lowres": torch.randn(n, D, generator=torch.Generator().manual_seed(9), dtype=F64)}
    res = perturbation_error(den, x0, schedule, t=t, scales=scales, batch_size=6, cond=cond,
                             generator=torch.Generator().manual_seed(10))
    g = torch.Generator().manual_seed(10)
    eps, z = torch.randn(x0.shape, generator=g, dtype=F64), torch.randn(x0.shape, generator=g, dtype=F64)
    x_t = schedule.diffuse(x0, torch.full((n,), t, dtype=F64), eps)
    errors = torch.zeros(len(scales), n, dtype=F64)
    for i in range(n):
        row = {key: value[i : i + 1] for key, value in cond.items()}
        clean = den.x0(x_t[i : i + 1], t, **row)
        for k, s in enumerate(scales):
            errors[k, i] = (den.x0(x_t[i : i + 1] + s * z[i : i + 1], t, **row) - clean).pow(2).mean()
    torch.testing.assert_close(res.error, errors.mean(1), rtol=1e-12, atol=1e-15)
    shuffled = perturbation_error(den, x0, schedule, t=t, scales=scales, batch_size=6,
                                  cond={"labels": cond["labels"], "lowres": cond["lowres"].flip(0)},
                                  generator=torch.Generator().manual_seed(10))
    assert not torch.allclose(shuffled.error, res.error)  # rows matter


# ----------------------------------------------------------------------------------------------
# Captured sampling and diffusers schedulers
# ----------------------------------------------------------------------------------------------
def test_captured_sampler_takes_cond_per_call():
    schedule = make_schedule("linear", T=1000)
    den = Denoiser(label_net, schedule, "eps", process_sharing(schedule))
    noise = _noise(schedule)
    cond = {"labels": LABELS}
    captured = CapturedSampler(den, noise, schedule, "dpm-solver++2m", NFE, graph=False, cond=cond)
    other = {"labels": LABELS.flip(0)}
    assert torch.equal(captured(noise, other), sample(den, noise, schedule, "dpm-solver++2m", NFE, cond=other))
    with pytest.raises(ValueError, match="captured for cond"):
        captured(noise)
    with pytest.raises(ValueError, match="captured for cond"):
        captured(noise, {"labels": LABELS.float()})
    rec = Recorder()
    forwards = CapturedForwards(rec, noise, den.conditions([10.0, 5.0], noise), graph=False, cond=cond)
    forwards()
    _assert_every_call_got(rec, cond, 2)


def _loaded(net) -> SimpleNamespace:
    """The parts of a LoadedModel the diffusers loop reads (discrete linear ε-run, no config)."""
    schedule = make_schedule("linear", T=1000)
    den = Denoiser(net, schedule, "eps", process_sharing(schedule))
    return SimpleNamespace(schedule=schedule, denoiser=den, config=None, shape=(D,), data_name="gmm")


def test_diffusers_schedulers_get_the_cond():
    """sample_diffusers hands cond to every evaluation; generate_diffusers gives each batch its rows."""
    rec = Recorder()
    model = _loaded(rec)
    noise = _noise(model.schedule).float()
    got = sample_diffusers(model, noise, "diffusers:DDIMScheduler", 5, cond={"labels": LABELS})
    _assert_every_call_got(rec, {"labels": LABELS}, 5)
    ref = sample_diffusers(_loaded(functools.partial(label_net, labels=LABELS)), noise,
                           "diffusers:DDIMScheduler", 5)
    assert torch.equal(got, ref)
    rec.calls.clear()
    labels = torch.tensor([0, 1, 2, 3, 4])
    generate_diffusers(model, 5, "diffusers:DDIMScheduler", 2, generator=torch.Generator().manual_seed(0),
                       batch=2, cond={"labels": labels})
    assert [call["labels"].tolist() for call in rec.calls] == [[0, 1], [0, 1], [2, 3], [2, 3], [4], [4]]
