"""The Denoiser's "edm" prediction against Karras et al. (2022) Table 1, written out independently."""

import math

import torch

from etsdm import Denoiser, make_schedule

SD = 0.5


def _table1(sigma: float) -> tuple[float, float, float, float]:
    """c_skip, c_out, c_in, c_noise of EDM Table 1 ("Ours" column)."""
    return (SD**2 / (sigma**2 + SD**2), sigma * SD / math.sqrt(sigma**2 + SD**2), 1 / math.sqrt(sigma**2 + SD**2),
            0.25 * math.log(sigma))


def _spy():
    seen = {}

    def net(y, c):
        seen["y"], seen["c"] = y.clone(), c.clone()
        return torch.sin(3 * y) + c.reshape(-1, 1)  # some F(c_in x, c_noise)
    return net, seen


def test_edm_denoiser_is_table_1():
    sched = make_schedule("edm")
    net, seen = _spy()
    den = Denoiser(net, sched, "edm", sigma_data=SD)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.002, 0.05, 1.0, 80.0):
        c_skip, c_out, c_in, c_noise = _table1(sigma)
        x0 = den.x0(x, sigma)
        assert torch.allclose(seen["y"], c_in * x, rtol=1e-12)  # the network sees c_in x ...
        assert torch.allclose(seen["c"], torch.full((4,), c_noise, dtype=torch.float32))  # ... and c_noise
        f = torch.sin(3 * c_in * x) + torch.tensor(c_noise, dtype=torch.float32).double()
        assert torch.allclose(x0, c_skip * x + c_out * f, rtol=1e-12, atol=1e-12)  # D = c_skip x + c_out F
        x0_true, eps = torch.randn_like(x), torch.randn_like(x)
        target = den.target(x0_true, eps, torch.full((4,), sigma, dtype=torch.float64))
        x_noisy = x0_true + sigma * eps
        assert torch.allclose(target, (x0_true - c_skip * x_noisy) / c_out, rtol=1e-9, atol=1e-9)  # F* (Eq. 8)


def test_edm_preconditioning_on_vp_uses_the_scaled_variables():
    """On a VP process x = α x0 + σ ε, EDM's D applies to x/α at σ/α (Karras et al. Eq. 4, s(t) = α)."""
    sched = make_schedule("linear", continuous=True)
    net, seen = _spy()
    den = Denoiser(net, sched, "edm", sigma_data=SD)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = 0.4
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    c_skip, c_out, c_in, _ = _table1(sigma / alpha)
    x0 = den.x0(x, t)
    f = torch.sin(3 * c_in * x / alpha) + seen["c"].double().reshape(-1, 1)
    assert torch.allclose(seen["y"], c_in * x / alpha, rtol=1e-12)
    assert torch.allclose(x0, c_skip * x / alpha + c_out * f, rtol=1e-12)
