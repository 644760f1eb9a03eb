"""Measurements of a diffusion model: Lipschitz constants in t (Eq. 8), stability under input
perturbations (Fig. 2), and schedule theory at a glance (Appendix C.1, D.3.2-D.3.3).

Every function here takes a model through one small interface, an *ε-function*
``eps_fn(x, t) -> ε`` with t the physical time (float64, shape (batch,)); a
:class:`~etsdm.denoiser.Denoiser` is adapted with :func:`as_eps_fn`, so its condition map
(E-TSDM sharing, remap) is applied exactly as in training and sampling.
"""

from .lipschitz import LipschitzCurve, as_eps_fn, as_x0_fn, lipschitz_curve, lipschitz_times
from .stability import StabilityResult, perturbation_error, relative_difference
from .theory import remap_snr, schedule_table, snr_curves, snr_ratio_modified

__all__ = [
    "LipschitzCurve",
    "StabilityResult",
    "as_eps_fn",
    "as_x0_fn",
    "lipschitz_curve",
    "lipschitz_times",
    "perturbation_error",
    "relative_difference",
    "remap_snr",
    "schedule_table",
    "snr_curves",
    "snr_ratio_modified",
]
