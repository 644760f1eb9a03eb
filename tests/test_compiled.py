"""etsdm.compiled on the CPU: the graph path is off there, and the same API gives sample()'s result."""

import pytest
import torch

from etsdm import Denoiser, TimestepSharing, make_schedule, sample
from etsdm.compiled import CapturedForwards, CapturedSampler


def _net(x, c):
    return 0.1 * x + 1e-3 * c.reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver-3", "ddpm"])
def test_eager_path_equals_sample(sampler):
    schedule = make_schedule("linear")
    den = Denoiser(_net, schedule, "eps", TimestepSharing(100, 5, T=1000))
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cap = CapturedSampler(den, noise, schedule, sampler, 10, generator=torch.Generator().manual_seed(5))
    assert not cap.graph_enabled
    got = cap(noise)
    want = sample(den, noise, schedule, sampler, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, want)


def test_graph_needs_cuda_and_calls_need_the_captured_shape():
    schedule = make_schedule("linear")
    den = Denoiser(_net, schedule)
    noise = torch.randn(3, 2)
    with pytest.raises(ValueError, match="CUDA"):
        CapturedSampler(den, noise, schedule, "ddim", 5, graph=True)
    with pytest.raises(ValueError, match="callback"):
        CapturedSampler(den, noise, schedule, "ddim", 5, callback=lambda info: None)
    with pytest.raises(ValueError, match="shape"):
        CapturedSampler(den, noise, schedule, "ddim", 5)(torch.randn(4, 2))


def test_bare_forwards_run_the_net_once_per_condition():
    calls = []
    x = torch.zeros(2, 3)
    CapturedForwards(lambda x, c: calls.append(float(c[0])) or x, x, [torch.full((2,), v) for v in (3.0, 1.0)])()
    assert calls == [3.0, 1.0]


@pytest.mark.parametrize("option, mode", [(True, "default"), ("max-autotune-no-cudagraphs",) * 2])
def test_compile_wraps_a_copy_of_the_net(monkeypatch, option, mode):
    """compile=True / a mode: torch.compile(net, mode) runs in a copy of the Denoiser; the caller's
    Denoiser keeps its own net; the samples are the uncompiled ones (here torch.compile is a spy)."""
    seen = []

    def fake_compile(net, mode=None):
        seen.append(mode)
        return lambda x, c: net(x, c)

    monkeypatch.setattr(torch, "compile", fake_compile)
    schedule = make_schedule("linear")
    den = Denoiser(_net, schedule, "eps", TimestepSharing(100, 5, T=1000))
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cap = CapturedSampler(den, noise, schedule, "ddim", 10, compile=option)
    assert seen == [mode] and den.net is _net and cap.model.net is not _net
    assert torch.equal(cap(noise), sample(den, noise, schedule, "ddim", 10))


@pytest.mark.parametrize("option", ["reduce-overhead", "max-autotune", 3])
def test_compile_modes_that_capture_graphs_are_refused(option):
    schedule = make_schedule("linear")
    with pytest.raises(ValueError, match="compile must be True or one of"):
        CapturedSampler(Denoiser(_net, schedule), torch.randn(3, 2), schedule, "ddim", 5, compile=option)
