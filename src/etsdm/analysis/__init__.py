"""Measurements of a diffusion model: Lipschitz constants in t (Eq. 8), stability under input
perturbations (Fig. 2), schedule theory at a glance (Appendix C.1, D.3.2-D.3.3) and Theorem 3.1
per process (VP, EDM, flow matching: :func:`singularity_table`).

Every function here takes a model as a :class:`~etsdm.denoiser.Denoiser`, a loaded run or a plain
callable ε(x, t) at physical time t (float64, shape (batch,)); :func:`as_denoiser` is the one
adapter (a callable becomes an ε-Denoiser, so conversions to x0 and v are the Denoiser's own), and
a Denoiser's condition map (E-TSDM sharing, remap) is applied exactly as in training and sampling.
"""

from .lipschitz import LipschitzCurve, as_denoiser, as_eps_fn, as_x0_fn, lipschitz_curve, lipschitz_times
from .processes import singularity_table
from .stability import StabilityResult, perturbation_error, relative_difference
from .theory import remap_snr, schedule_table, snr_curves, snr_ratio_modified

__all__ = [
    "LipschitzCurve",
    "StabilityResult",
    "as_denoiser",
    "as_eps_fn",
    "as_x0_fn",
    "lipschitz_curve",
    "lipschitz_times",
    "perturbation_error",
    "relative_difference",
    "remap_snr",
    "schedule_table",
    "singularity_table",
    "snr_curves",
    "snr_ratio_modified",
]
