"""Classifier-free guidance (issue 10; Ho & Salimans 2022): label dropout in training and the guided
network out_u + s (out_c − out_u) in sampling.

* :func:`drop_labels`: each label -> NULL_LABEL with probability p (rate within 5 standard errors
  on 200k labels), p = 0 / p = 1 exact and drawing nothing.
* :func:`guided`: scale 1 is the conditional Denoiser bitwise, scale 0 the unconditional one
  (labels = NULL_LABEL) bitwise, and any other scale gives ε̂ (and x̂0) = ε̂_u + s (ε̂_c − ε̂_u) of two
  separate calls, on VP ε / v, EDM and flow; one batched network call of 2B rows with the same time
  condition (E-TSDM's shared f(t)) in both halves and the labels only replaced; a guided Denoiser
  runs on the samplers' precomputed path and equals guidance done by hand per step.
"""

from __future__ import annotations

import math

import pytest
import torch

from etsdm import NULL_LABEL, Denoiser, GuidedNet, drop_labels, guided, make_schedule, sample
from etsdm.analytic import Float64Denoiser
from etsdm.conditioning import process_sharing
from etsdm.nets import make_net
from etsdm.samplers import init_noise_sigma
from etsdm.samplers import run as sampler_run

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
LABELS = torch.tensor([2, 0, NULL_LABEL, 1])


def label_net(x: torch.Tensor, c: torch.Tensor, labels: torch.Tensor, lowres: torch.Tensor | None = None):
    """Row-wise, nonlinear in x, c and the label (the null label -1 has its own output)."""
    c = c.to(x.dtype)[:, None]
    y = labels.to(x.dtype)[:, None]
    out = 0.6 * torch.tanh(x + 0.05 * c) + 0.3 * torch.sin(3.1 * c + y) + 0.2 * (y + 1.5) * torch.tanh(0.5 * x)
    return out if lowres is None else out + 0.1 * lowres * x


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, x, c, **cond):
        self.calls.append((x.clone(), c.clone(), {k: v.clone() for k, v in cond.items()}))
        return label_net(x, c, **cond)


PROCESSES = {  # name: (schedule, prediction, a time)
    "vp-eps": (lambda: make_schedule("linear", T=1000), "eps", 40.0),
    "vp-v": (lambda: make_schedule("cosine", continuous=True), "v", 0.3),
    "edm": (lambda: make_schedule("edm"), "edm", 1.7),
    "flow": (lambda: make_schedule("flow"), "flow", 0.6),
}


def _x(shape=(4, 2), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------------------------
# drop_labels
# ----------------------------------------------------------------------------------------------
def test_drop_labels_rate_and_exact_ends():
    labels = torch.randint(0, 10, (200_000,), generator=torch.Generator().manual_seed(0))
    p = 0.1
    dropped = drop_labels(labels, p, torch.Generator().manual_seed(1))
    null = dropped == NULL_LABEL
    assert abs(null.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / len(labels))
    assert torch.equal(dropped[~null], labels[~null]) and dropped.dtype == labels.dtype
    assert torch.equal(dropped, drop_labels(labels, p, torch.Generator().manual_seed(1)))  # reproducible
    g = torch.Generator().manual_seed(2)
    state = g.get_state()
    assert drop_labels(labels, 0.0, g) is labels
    assert torch.equal(drop_labels(labels, 1.0, g), torch.full_like(labels, NULL_LABEL))
    assert torch.equal(g.get_state(), state)  # p = 0, 1 draw nothing
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="label_dropout"):
            drop_labels(labels, bad)
    with pytest.raises(ValueError, match="integer"):
        drop_labels(labels.float(), 0.1)


# ----------------------------------------------------------------------------------------------
# guided
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", list(PROCESSES))
def test_scale_one_is_the_conditional_and_zero_the_unconditional_denoiser(process):
    make, prediction, t = PROCESSES[process]
    schedule = make()
    den = Denoiser(label_net, schedule, prediction, process_sharing(schedule))
    x = _x()
    cond = {"labels": LABELS}
    assert torch.equal(guided(den, 1.0).eps(x, t, **cond), den.eps(x, t, **cond))
    null = {"labels": torch.full_like(LABELS, NULL_LABEL)}
    assert torch.equal(guided(den, 0.0).eps(x, t, **cond), den.eps(x, t, **null))
    assert torch.equal(guided(den, 0.0).x0(x, t, **cond), den.x0(x, t, **null))


@pytest.mark.parametrize("scale", [3.0, -0.5])
@pytest.mark.parametrize("process", list(PROCESSES))
def test_scale_s_is_eps_u_plus_s_times_the_difference(process, scale):
    """Guiding the raw output (one batched call) gives ε̂_u + s(ε̂_c − ε̂_u) and x̂0_u + s(x̂0_c − x̂0_u)
    of two separate calls: the conversions are affine in the output at fixed x, t."""
    make, prediction, t = PROCESSES[process]
    schedule = make()
    den = Denoiser(label_net, schedule, prediction, process_sharing(schedule))
    x, cond, null = _x(), {"labels": LABELS}, {"labels": torch.full_like(LABELS, NULL_LABEL)}
    g = guided(den, scale)
    for quantity in ("eps", "x0"):
        c_out, u_out = getattr(den, quantity)(x, t, **cond), getattr(den, quantity)(x, t, **null)
        expected = u_out + scale * (c_out - u_out)
        torch.testing.assert_close(getattr(g, quantity)(x, t, **cond), expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(expected, c_out)  # guidance changed something: the check can fail


def test_one_batched_call_with_the_shared_time_condition_and_null_labels():
    """2B rows: x twice (EDM: the scaled input twice), the same c = net_time(f(t)) in both halves
    (E-TSDM's shared condition, never the class), labels [y, NULL], every other cond input kept."""
    schedule = make_schedule("edm")
    sharing = process_sharing(schedule)
    rec = Recorder()
    den = Denoiser(rec, schedule, "edm", sharing)
    x, lowres = _x(), _x(seed=1)
    t = 0.05  # inside E-TSDM's band: the condition is shared
    guided(den, 2.0).eps(x, t, labels=LABELS, lowres=lowres)
    assert len(rec.calls) == 1
    seen_x, seen_c, seen_cond = rec.calls[0]
    c = den.net_condition(t, x)
    assert torch.equal(c, den.net_condition(float(sharing(torch.tensor(t, dtype=F64))), x))  # f(t) shared
    assert torch.equal(seen_c, torch.cat([c, c]))
    assert torch.equal(seen_x[:4], seen_x[4:]) and seen_x.shape == (8, 2)
    assert torch.equal(seen_cond["labels"], torch.cat([LABELS, torch.full_like(LABELS, NULL_LABEL)]))
    assert torch.equal(seen_cond["lowres"], torch.cat([lowres, lowres]))


def test_guided_denoiser_keeps_its_class_and_leaves_the_original_alone():
    schedule = make_schedule("linear", T=1000)
    den = Float64Denoiser(label_net, schedule, "v", process_sharing(schedule), sigma_data=0.7)
    g = guided(den, 4.0)
    assert type(g) is Float64Denoiser and isinstance(g.net, GuidedNet) and g.net.net is label_net
    assert (g.schedule, g.prediction, g.condition, g.sigma_data) == (schedule, "v", den.condition, 0.7)
    assert den.net is label_net and "net" not in den._modules  # the original is untouched
    assert g.net_condition(3.0, _x()).dtype == F64  # the subclass's own evaluation
    mlp = make_net("mlp", dim=2)
    module_den = Denoiser(mlp, schedule)
    g = guided(module_den, 4.0)
    assert module_den.net is mlp and g.net.net is mlp  # a registered submodule: only the copy's is wrapped


def test_errors_are_named():
    den = Denoiser(label_net, make_schedule("linear", T=1000))
    with pytest.raises(ValueError, match=r"guidance scale 2 needs cond\['labels'\]"):
        guided(den, 2.0).eps(_x(), 10.0)
    with pytest.raises(ValueError, match="sample.guidance"):
        GuidedNet(label_net, math.inf)


# ----------------------------------------------------------------------------------------------
# In the samplers
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver-3", "dpm-solver++2m", "heun"])
@pytest.mark.parametrize("process", ["vp-eps", "edm"])
def test_a_guided_denoiser_samples_on_the_precomputed_path(process, sampler):
    """sample(guided(den, s), cond=...) runs the precomputed "denoiser" path and equals guidance
    done by hand at every step (an ε-callable making two separate Denoiser calls); s = 1 equals the
    conditional sample bitwise."""
    make, prediction, _ = PROCESSES[process]
    schedule = make()
    den = Denoiser(label_net, schedule, prediction, process_sharing(schedule))
    noise = init_noise_sigma(schedule) * _x(seed=3)
    cond, null = {"labels": LABELS}, {"labels": torch.full_like(LABELS, NULL_LABEL)}
    s = 2.5

    def by_hand(x, t, labels):
        eps_c, eps_u = den.eps(x, t, labels=labels), den.eps(x, t, **null)
        return eps_u + s * (eps_c - eps_u)

    by_hand.prediction = prediction
    g = guided(den, s)
    assert sampler_run._mode(g) == "denoiser" and sampler_run._mode(by_hand) == "eps"
    got = sample(g, noise, schedule, sampler, 7, cond=cond)
    torch.testing.assert_close(got, sample(by_hand, noise, schedule, sampler, 7, cond=cond), rtol=1e-10, atol=1e-10)
    assert torch.equal(sample(guided(den, 1.0), noise, schedule, sampler, 7, cond=cond),
                       sample(den, noise, schedule, sampler, 7, cond=cond))


def test_guided_class_conditional_unet_matches_two_separate_calls():
    torch.manual_seed(0)
    net = make_net("unet", preset="tiny", in_channels=1, num_classes=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    den = Denoiser(net, make_schedule("linear", T=1000), "eps", process_sharing(make_schedule("linear", T=1000)))
    x, t, labels = torch.randn(3, 1, 8, 8), 20.0, torch.tensor([0, 2, 1])
    with torch.no_grad():
        eps_c, eps_u = den.eps(x, t, labels=labels), den.eps(x, t, labels=torch.full_like(labels, NULL_LABEL))
        got = guided(den, 3.0).eps(x, t, labels=labels)
    torch.testing.assert_close(got, eps_u + 3.0 * (eps_c - eps_u), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, eps_c, atol=1e-4)
