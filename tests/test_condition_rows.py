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
from etsdm.conditioning import Identity, Remap, TimestepSharing

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


def _counting(monkeypatch, cls) -> list[int]:
    calls: list[int] = []
    inner = cls.__call__

    def counted(self, t):
        calls.append(1)
        return inner(self, t)

    monkeypatch.setattr(cls, "__call__", counted)
    return calls


@pytest.mark.parametrize("condition", [TimestepSharing(100, 5), Identity(), Remap("inverse-sigmoid")])
def test_a_map_that_states_its_parameters_is_not_called_again(monkeypatch, condition):
    """Built-in maps have state_key(): the same plan, map state and schedule on the next call reuse
    the rows without a map call; the samples are those of a Denoiser that never sampled."""
    calls = _counting(monkeypatch, type(condition))
    den, net, schedule = _setup(condition=condition)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    first = sample(den, noise, schedule, "dpm-solver-2", NFE)
    rows, n_first = list(net.seen), len(calls)
    net.seen.clear()
    second = sample(den, noise, schedule, "dpm-solver-2", NFE)
    assert n_first == 1 and len(calls) == 1
    assert all(a is b for a, b in zip(rows, net.seen, strict=True))
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_a_changed_map_parameter_calls_the_map_again():
    """Setting t̃ on the map object changes its state_key: the next call maps the times again."""
    sharing = TimestepSharing(100, 5)
    den, net, schedule = _setup(condition=sharing)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(6))
    sample(den, noise, schedule, "ddim", NFE)
    sharing.t_tilde = 500  # t in [80, 500) now maps to the last left endpoint, 80
    net.seen.clear()
    sample(den, noise, schedule, "ddim", NFE)
    from etsdm.samplers import plan

    times, _ = plan(schedule, "ddim", NFE)
    want = schedule.net_time(sharing(torch.tensor(times[:NFE], dtype=torch.float64))).to(torch.float32)
    assert [c[0].item() for c in net.seen] == want.tolist()
    assert any(t >= 100 and c[0].item() == 80 for t, c in zip(times, net.seen, strict=False))


def test_the_network_writing_its_condition_is_caught_on_the_fast_path():
    """Even without a map call, rows the network wrote into are made again."""
    den, net, schedule = _setup(condition=TimestepSharing(100, 5), write=3.0)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(7))
    sample(den, noise, schedule, "ddim", NFE)
    net.write, clean = None, Recording()
    net.seen.clear()
    sample(den, noise, schedule, "ddim", NFE)
    sample(Denoiser(clean, schedule, "eps", den.condition), noise, schedule, "ddim", NFE)
    assert _values(net.seen) == _values(clean.seen)


class Shifted(TimestepSharing):
    """A subclass whose __call__ reads state its parent's state_key does not name."""

    shift = 0.0

    def __call__(self, t):
        return super().__call__(t) + self.shift


def test_a_subclass_overriding_call_only_is_called_every_time(monkeypatch):
    """state_key is trusted only when the class that defines __call__ defines it too."""
    calls = _counting(monkeypatch, Shifted)
    shifted = Shifted(100, 5)
    den, net, schedule = _setup(condition=shifted)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    sample(den, noise, schedule, "ddim", NFE)
    shifted.shift = 1.0
    net.seen.clear()
    sample(den, noise, schedule, "ddim", NFE)
    assert len(calls) == 2
    clean = Recording()
    sample(Denoiser(clean, schedule, "eps", shifted), noise, schedule, "ddim", NFE)
    assert _values(net.seen) == _values(clean.seen)
