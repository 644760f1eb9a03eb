"""Schedule theory at a glance against Appendix C.1 / D.3.2 / D.3.3 closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from etsdm.analysis import remap_snr, schedule_table, snr_ratio_modified

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is fastest


def test_table_dalpha_dt_matches_appendix_c1_and_modified_ns_is_zero():
    rows = {(r["schedule"], r["modified"]): r for r in schedule_table()}
    assert rows[("linear", False)]["dalpha_dt_0"] == pytest.approx(-0.05, rel=1e-9)  # −β̄_min/2, Eq. (A2)
    assert rows[("quadratic", False)]["dalpha_dt_0"] == pytest.approx(-0.05, rel=1e-9)
    s = 0.008
    eq_a9 = -math.pi / (2 * (1 + s)) * math.tan(s / (1 + s) * math.pi / 2)
    assert rows[("cosine", False)]["dalpha_dt_0"] == pytest.approx(eq_a9, rel=1e-9)
    for name in ("linear", "quadratic", "cosine"):
        assert rows[(name, True)]["dalpha_dt_0"] == pytest.approx(0.0, abs=1e-12)
        # Theorem 3.1: dσ/dτ blows up towards 0 for the originals, stays bounded for Modified-NS
        orig, mod = rows[(name, False)]["dsigma_dt"], rows[(name, True)]["dsigma_dt"]
        assert orig[0] > 2.5 * orig[1] > 0
        assert mod[0] <= 1.01 * mod[1]
    # the discrete first step: σ_0 = sqrt(β_1) = sqrt(β̄_min / T) for linear
    assert rows[("linear", False)]["discrete_sigma_t0"] == pytest.approx(math.sqrt(0.1 / 1000), rel=1e-9)


def test_modified_ns_snr_ratio_fig_a8():
    ratios = snr_ratio_modified(T=1000)
    lin = ratios["linear"][1]
    # first step: SNR ≈ 1/β, so the ratio is β_orig / β_mod = 1e-4 / (20 · 1e-3 / 1000)
    assert float(lin[0]) == pytest.approx(1e-4 / 20e-6, rel=1e-3)
    # β_T kept (Appendix D.3.2): ᾱ_T, ≈ the SNR at T, rises by e^{β̄min/2} (½∫β̄ is β̄min/4 smaller)
    assert float(lin[-1]) == pytest.approx(math.exp(0.05), rel=0.01)
    assert float(ratios["quadratic"][1][-1]) == pytest.approx(1.0, rel=0.02)  # β_T raised: SNR at T kept
    assert float(ratios["quadratic"][1][:800].min()) > 1.2  # quadratic: SNR raised almost everywhere
    assert float(ratios["cosine"][1][0]) > 1


def test_remap_uniform_lambda_visits_high_snr_fig_a9():
    """f(t) = 1/τ, τ = (t+1)/T, λ evenly in [1, T]: the k-th smallest visited time is
    T/(T−k) − 1 (rounded), never later than k, so its SNR is never lower than uniform t's."""
    T = 1000
    d = remap_snr("linear", T=T, kind="inverse")
    k = torch.arange(T, dtype=torch.float64)
    expected = (T / (T - k) - 1).round()
    torch.testing.assert_close(torch.tensor(d["t_uniform_lambda"], dtype=torch.float64), expected)
    assert all(a >= b for a, b in zip(d["snr_uniform_lambda"], d["snr_uniform_t"], strict=True))
    assert sum(v > 1000 for v in d["snr_uniform_lambda"]) > T / 2  # most visits near t = 0
