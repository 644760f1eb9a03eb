"""A Denoiser hands a sampler's next call the same condition rows when nothing changed (issue 11).

Making one (batch,) tensor per evaluation point costs more than a cheap network's whole step on a
CPU, so :meth:`Denoiser.conditions` keeps the last call's rows (views of one matrix) and reuses them
when the recomputed conditions are exactly the same values at the same batch size. These tests show
that reuse happens, and that every change that could make reused rows wrong makes new ones instead.
"""

from __future__ import annotations

import pytest
import torch

from etsdm import Denoiser, make_schedule, sample
from etsdm.conditioning import TimestepSharing

pytestmark = pytest.mark.usefixtures("single_thread")

NFE = 8


class Recording:
    """A network that returns 0.1·x and records the condition tensors it was given."""

    def __init__(self, write: float | None = None):
        self.seen: list[torch.Tensor] = []
        self.write = write  # add this to the condition in place (a network that writes its input)

    def __call__(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.seen.append(c)
        values = c.clone()
        if self.write is not None:
            c.add_(self.write)
        return 0.1 * x * (1 + values.reshape(-1, *([1] * (x.ndim - 1))) / 1000)


def _setup(condition=None, write: float | None = None):
    schedule = make_schedule("linear", T=1000)
    net = Recording(write)
    return Denoiser(net, schedule, "eps", condition or TimestepSharing(100, 5)), net, schedule


def _fresh(schedule, condition, noise, sampler="ddim"):
    """The same call on a new Denoiser (nothing to reuse)."""
    return sample(Denoiser(Recording(), schedule, "eps", condition), noise, schedule, sampler, NFE)


def _values(seen: list[torch.Tensor]) -> list[list[float]]:
    return [c.tolist() for c in seen]


def test_second_call_reuses_the_rows_and_gives_the_same_samples():
    den, net, schedule = _setup()
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    first = sample(den, noise, schedule, "ddim", NFE)
    rows = list(net.seen)
    net.seen.clear()
    second = sample(den, noise, schedule, "ddim", NFE)
    assert all(a is b for a, b in zip(rows, net.seen, strict=True))  # the same tensor objects
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    torch.testing.assert_close(second, _fresh(schedule, den.condition, noise), rtol=0, atol=0)


@pytest.mark.parametrize("change", ["condition", "batch", "nfe", "sampler", "inference"])
def test_a_change_makes_new_rows(change):
    """A different map, batch size, time grid or inference mode: new rows with the new values,
    samples equal to a Denoiser that never sampled before."""
    den, net, schedule = _setup()
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    sample(den, noise, schedule, "ddim", NFE)
    old = list(net.seen)  # kept alive, so no id is reused
    net.seen.clear()
    nfe, sampler = NFE, "ddim"
    if change == "condition":
        den.condition = TimestepSharing(500, 5)  # the grid's 142, 285, 428 now share 100, 200, 400
    elif change == "batch":
        noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    elif change == "nfe":
        nfe = NFE + 3
    elif change == "sampler":
        sampler = "dpm-solver-2"
    if change == "inference":
        with torch.inference_mode():
            out = sample(den, noise, schedule, sampler, nfe)
        assert all(c.is_inference() for c in net.seen)
    else:
        out = sample(den, noise, schedule, sampler, nfe)
    assert not {id(c) for c in old} & {id(c) for c in net.seen}
    ref = sample(Denoiser(Recording(), schedule, "eps", den.condition), noise, schedule, sampler, nfe)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert all(c.shape == (noise.shape[0],) for c in net.seen)


def test_a_network_that_writes_its_condition_gets_correct_ones_next_call():
    """Rows the network wrote into are not handed out again: the next call sees the true values."""
    den, net, schedule = _setup(write=7.0)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(3))
    sample(den, noise, schedule, "ddim", NFE)
    net.seen.clear()
    net.write = None
    out = sample(den, noise, schedule, "ddim", NFE)
    clean = Recording()
    ref = sample(Denoiser(clean, schedule, "eps", den.condition), noise, schedule, "ddim", NFE)
    assert _values(net.seen) == _values(clean.seen)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_large_condition_matrices_are_not_kept():
    """Past 2**20 values the rows are made per call (their making costs little beside such a batch)."""
    den, net, schedule = _setup()
    noise = torch.zeros(1 << 17, 1)
    c1 = den.conditions([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0], noise)
    c2 = den.conditions([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0], noise)
    assert c1[0] is not c2[0] and torch.equal(torch.stack(c1), torch.stack(c2))
    small = torch.zeros(4, 1)
    assert den.conditions([10.0, 20.0], small)[0] is den.conditions([10.0, 20.0], small)[0]
