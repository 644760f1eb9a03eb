"""Condition maps against Algorithm A1 written out literally, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from etsdm import Identity, Remap, TimestepSharing, make_condition_map

pytestmark = pytest.mark.usefixtures("single_thread")


def algorithm_a1(t: float, t_tilde: float, n: int) -> float:
    """Algorithm A1, lines 1 and 5-9, as a literal loop over the partition T = {t_0, ..., t_n}."""
    delta = t_tilde / n
    partition = [i * delta for i in range(n + 1)]  # line 1: uniform partition of [0, t̃)
    if t < t_tilde:  # line 5
        best = None
        for i in range(1, n + 1):  # line 6: max_{1<=i<=n} {t_{i-1} in T : t_{i-1} <= t}
            if partition[i - 1] <= t and (best is None or partition[i - 1] > best):
                best = partition[i - 1]
        return best
    return t  # line 8


# ----------------------------------------------------------------------------------------------
# Discrete time: every integer t in 0..999
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t_tilde, n", [(100, 5), (100, 1), (100, 100), (200, 8), (1000, 10), (30, 3), (7, 7)])
def test_sharing_matches_algorithm_a1_discrete(t_tilde, n):
    m = TimestepSharing(t_tilde, n, T=1000)
    ts = list(range(1000))
    expected = [algorithm_a1(t, t_tilde, n) for t in ts]
    # batched integer tensor, batched float64 tensor, every 0-d tensor, every Python int
    assert m(torch.tensor(ts)).tolist() == expected
    assert m(torch.tensor(ts, dtype=torch.float64)).tolist() == [float(e) for e in expected]
    assert [float(m(torch.tensor(t))) for t in ts] == expected
    assert [float(m(t)) for t in ts] == expected


def test_default_discrete_example_from_the_issue():
    m = TimestepSharing()  # t̃ = 100, n = 5
    t = torch.arange(120)
    expected = torch.cat([torch.arange(5).repeat_interleave(20) * 20, torch.arange(100, 120)])
    assert torch.equal(m(t), expected)
    assert m(t).dtype == t.dtype and m(t).shape == t.shape


def test_shape_and_dtype_preserved():
    m = TimestepSharing(100, 5)
    for dtype in (torch.int64, torch.float32, torch.float64):
        t = torch.tensor([[3, 50], [99, 500]], dtype=dtype)
        out = m(t)
        assert out.shape == t.shape and out.dtype == dtype
        assert out.tolist() == [[0, 40], [80, 500]]


# ----------------------------------------------------------------------------------------------
# Continuous time
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t_tilde, n", [(0.1, 5), (0.1, 7), (0.1, 1), (0.3, 13), (1.0, 4)])
def test_sharing_matches_algorithm_a1_continuous(t_tilde, n):
    m = TimestepSharing(t_tilde, n, T=None)
    delta = t_tilde / n
    boundaries = np.array([i * delta for i in range(n + 1)])
    # dense grid plus every boundary and the float64 number just below it (floor(t/Δ) traps)
    grid = np.concatenate([np.linspace(0, 1, 20001), boundaries, np.nextafter(boundaries[1:], 0)])
    expected = [algorithm_a1(float(t), t_tilde, n) for t in grid]
    assert m(torch.tensor(grid, dtype=torch.float64)).tolist() == expected
    for t in grid[::997]:  # Python floats and 0-d tensors take the same path
        assert float(m(float(t))) == algorithm_a1(float(t), t_tilde, n)
        assert float(m(torch.tensor(float(t), dtype=torch.float64))) == algorithm_a1(float(t), t_tilde, n)


def test_float32_input_is_mapped_on_its_value():
    """A float32 t is evaluated on its exact value (promoted to float64) and returned in float32."""
    m = TimestepSharing(0.1, 7, T=None)
    t32 = torch.linspace(0, 0.2, 4001, dtype=torch.float32)
    expected = [algorithm_a1(v, 0.1, 7) for v in t32.double().tolist()]
    out = m(t32)
    assert out.dtype == torch.float32
    assert out.tolist() == torch.tensor(expected, dtype=torch.float32).tolist()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((100, 0), {}, "n must"),
        ((100, -3), {}, "n must"),
        ((100, 2.5), {}, "n must"),
        ((0, 5), {}, "t_tilde"),
        ((1001, 5), {}, "t_tilde"),
        ((-10, 5), {}, "t_tilde"),
        ((100, 101), {}, "n=101 sub-intervals do not fit in t_tilde=100"),
        ((50.5, 5), {}, "not a whole number of timesteps"),
        ((0.1, 5), {}, r"for continuous time t in \[0, 1\] pass T=None"),
        ((1.5, 5), {"T": None}, "t_tilde"),
        ((0.0, 5), {"T": None}, "t_tilde"),
        ((0.1, 0), {"T": None}, "n must"),
    ],
)
def test_sharing_invalid_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimestepSharing(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Properties of f_T (hypothesis)
# ----------------------------------------------------------------------------------------------
@st.composite
def sharing_and_times(draw):
    if draw(st.booleans()):  # discrete
        n = draw(st.integers(1, 50))
        t_tilde = n * draw(st.integers(1, 1000 // n))
        t = draw(st.lists(st.integers(0, 999), min_size=2, max_size=8))
        return TimestepSharing(t_tilde, n, T=1000), torch.tensor(t, dtype=torch.float64)
    n = draw(st.integers(1, 50))
    t_tilde = draw(st.floats(1e-3, 1.0))
    t = draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
    return TimestepSharing(t_tilde, n, T=None), torch.tensor(t, dtype=torch.float64)


@given(sharing_and_times())
def test_sharing_properties(mt):
    m, t = mt
    f = m(t)
    assert torch.equal(m(f), f)  # idempotent: f_T(f_T(t)) = f_T(t)
    assert bool((f <= t).all())  # f_T(t) <= t
    assert bool((t - f < m.delta * (1 + 1e-12)).all())  # within one sub-interval of t
    order = torch.argsort(t)
    assert bool((f[order].diff() >= 0).all())  # monotone non-decreasing
    inside = t < m.t_tilde
    assert torch.equal(f[~inside], t[~inside])  # identity on [t̃, T)


# ----------------------------------------------------------------------------------------------
# Remap (Appendix D.3.3) and the factory
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inverse", "inverse-sigmoid"])
def test_remap_closed_forms(kind):
    disc, cont = Remap(kind, T=1000), Remap(kind, T=None)
    t = torch.tensor([0.0, 9.0, 499.0, 998.0], dtype=torch.float64)
    tau = (t + 1) / 1000  # DDPM's t/T for our index t
    f = (lambda x: 1 / x) if kind == "inverse" else (lambda x: torch.log(x / (1 - x)))
    torch.testing.assert_close(disc(t), f(tau))
    u = torch.tensor([1e-3, 0.1, 0.5, 0.9], dtype=torch.float64)  # inside the clamp (continuous K: T = 1000)
    torch.testing.assert_close(cont(u), f(u))


@given(st.sampled_from(["inverse", "inverse-sigmoid"]), st.booleans(), st.floats(1e-3, 0.999))
def test_remap_inverts(kind, discrete, u):
    m = Remap(kind, T=1000 if discrete else None)
    t = torch.tensor(u * 1000 - 1 if discrete else u, dtype=torch.float64)
    assert float(m.inverse(m(t))) == pytest.approx(float(t), rel=1e-9, abs=1e-9)  # f⁻¹(f(t)) = t
    lam = m(t)
    assert float(m(m.inverse(lam))) == pytest.approx(float(lam), rel=1e-9, abs=1e-9)  # f(f⁻¹(λ)) = λ


def test_remap_is_strictly_monotone():
    for kind, sign in (("inverse", -1), ("inverse-sigmoid", 1)):
        lam = Remap(kind, T=1000)(torch.arange(1000, dtype=torch.float64))
        assert bool((sign * lam.diff() > 0).all())


def test_factory_and_configs():
    assert isinstance(make_condition_map("identity"), Identity)
    m = make_condition_map("etsdm", T=1000, t_tilde=200, n=8)
    assert isinstance(m, TimestepSharing) and (m.t_tilde, m.n, m.T) == (200, 8, 1000)
    assert make_condition_map(**{**m.config(), "T": 1000}).config() == m.config()
    c = make_condition_map("etsdm", T=None)
    assert (c.t_tilde, c.n) == (0.1, 5) and math.isclose(c.delta, 0.02)
    r = make_condition_map("remap", T=1000, remap="inverse-sigmoid", remap_k=9.0)
    assert isinstance(r, Remap) and r.kind == "inverse-sigmoid" and r.K == 9.0
    assert make_condition_map(**{**r.config(), "T": 1000}).config() == r.config()
    with pytest.raises(ValueError, match="condition map"):
        make_condition_map("bogus")
    with pytest.raises(ValueError, match="kind"):
        Remap("sqrt")


# ----------------------------------------------------------------------------------------------
# Issue 7, item 8: discrete sharing when n does not divide t̃ (Fig. 5a: t̃ = 150, 250 with t̃/n ≈ 20)
# ----------------------------------------------------------------------------------------------
def left_boundary(t: int, boundaries: list[int], t_tilde: int) -> int:
    """f_T(t) with explicit boundaries: the largest t_i <= t below t̃, else t (a literal loop)."""
    return max(b for b in boundaries[:-1] if b <= t) if t < t_tilde else t


@pytest.mark.parametrize(("t_tilde", "n", "boundaries"), [
    (150, 8, [0, 19, 38, 56, 75, 94, 113, 131, 150]),  # 18.75 i rounded (halves up: 56.25 -> 56)
    (250, 13, [0, 19, 38, 58, 77, 96, 115, 135, 154, 173, 192, 212, 231, 250]),
    (100, 3, [0, 33, 67, 100]),
    (10, 4, [0, 3, 5, 8, 10]),  # 2.5 -> 3, 7.5 -> 8: halves round up
])
def test_sharing_rounds_boundaries_when_n_does_not_divide_t_tilde(t_tilde, n, boundaries):
    m = TimestepSharing(t_tilde, n, T=1000)
    assert m.boundaries == boundaries
    ts = list(range(1000))
    assert m(torch.tensor(ts)).tolist() == [left_boundary(t, boundaries, t_tilde) for t in ts]
    widths = [b - a for a, b in zip(boundaries, boundaries[1:], strict=False)]
    assert [m.cell_width(b) for b in boundaries[:-1]] == widths


@given(st.integers(1, 1000).flatmap(lambda k: st.tuples(st.just(k), st.integers(1, k))))
def test_rounded_boundaries_are_whole_increasing_and_exact_when_n_divides(kn):
    t_tilde, n = kn
    b = TimestepSharing(t_tilde, n, T=1000).boundaries
    assert b[0] == 0 and b[-1] == t_tilde and all(isinstance(v, int) for v in b)
    assert all(y > x for x, y in zip(b, b[1:], strict=False))  # every sub-interval holds >= 1 timestep
    assert all(abs(v - i * t_tilde / n) <= 0.5 for i, v in enumerate(b))  # round(i t̃ / n)
    if t_tilde % n == 0:
        assert b == [i * t_tilde // n for i in range(n + 1)]


def test_continuous_t_tilde_without_t_none_says_how_to_ask_for_continuous_time():
    with pytest.raises(ValueError, match=r"t_tilde=0\.1 is not a whole number of timesteps.*pass T=None"):
        TimestepSharing(t_tilde=0.1, n=5)
    assert TimestepSharing(t_tilde=0.1, n=5, T=None).boundaries[1] == pytest.approx(0.02)


def test_fig5_ablation_configs_differ_from_the_etsdm_config_only_in_the_condition():
    from etsdm.config import configs_dir, load_config, to_dict

    paths = sorted((configs_dir() / "paper" / "ablations").glob("*.yaml"))
    seen = {}
    for p in paths:
        ds = p.name.split("_")[0]
        cfg = to_dict(load_config(p))
        ref = to_dict(load_config(configs_dir() / "paper" / f"{ds}_etsdm.yaml"))
        cond = cfg["diffusion"].pop("condition")
        ref["diffusion"].pop("condition")
        assert {**cfg, "name": ref["name"]} == ref, p.name
        m = load_config(p).build_condition()
        assert isinstance(m, TimestepSharing) and cond["kind"] == "etsdm"
        seen.setdefault(ds, set()).add((m.t_tilde, m.n))
    fig5a = {(t, min(range(1, t + 1), key=lambda n: abs(t / n - 20))) for t in (20, 150, 200, 250, 300)}
    fig5b = {(100, n) for n in (1, 2, 10, 20, 50, 100)}  # (0, -) is the baseline, (100, 5) the E-TSDM config
    assert seen == {"ffhq": fig5a | fig5b, "celebahq": fig5a | fig5b}
    assert {(150, 8), (250, 13)} <= fig5a


# ----------------------------------------------------------------------------------------------
# Issue 7, item 9: the default t̃ is T/10 (0.1 in continuous time), computed in one place
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("T", "expected"), [(1000, 100), (50, 5), (2000, 200), (15, 2), (4, 1), (None, 0.1)])
def test_default_t_tilde_is_a_tenth_of_the_time_range(T, expected):
    from etsdm.analysis.stability import default_t_tilde as stability_default
    from etsdm.conditioning import default_t_tilde
    from etsdm.schedules import make_schedule

    assert default_t_tilde(T) == expected
    if T is not None and T >= 50:  # the default n = 5 fits
        assert make_condition_map("etsdm", T=T).t_tilde == expected
        assert TimestepSharing(T=T).t_tilde == expected
        assert stability_default(make_schedule("linear", T=T)) == expected
    if T is None:
        assert make_condition_map("etsdm", T=None).t_tilde == 0.1
        assert stability_default(make_schedule("linear", continuous=True)) == 0.1


def test_config_with_fifty_timesteps_builds_the_etsdm_map():
    from etsdm.config import load_config

    m = load_config(None, ["schedule.T=50", "diffusion.condition.kind=etsdm", "diffusion.condition.t_tilde=null",
                           "sample.nfe=50"])  # the preview sampler fits the 50 timesteps (checked at load)
    assert isinstance(m.build_condition(), TimestepSharing)
    assert m.build_condition().boundaries == [0, 1, 2, 3, 4, 5]
