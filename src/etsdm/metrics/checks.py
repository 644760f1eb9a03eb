"""Checks on samples before any metric sees them, so a wrong input never turns into a number.

etsdm's samples are float (N, C, H, W) images in [-1, 1] (the data scale of every image data set)
or float (N, D) vectors (Gaussian-mixture data, unbounded). :func:`check_samples` is called by
:func:`~etsdm.metrics.evaluate.evaluate_samples` (so by ``etsdm evaluate`` and ``etsdm sample
--evaluate`` alike):

* NaN or ±inf anywhere: :class:`SampleError` (a diverged model or a broken file; FID of NaN is NaN,
  and clamping +inf to 1 would hide it).
* Integer or boolean dtype: :class:`SampleError` (e.g. uint8 pixels 0..255; say how to rescale).
* Images whose values reach beyond ±:data:`MAX_OVERSHOOT`: :class:`SampleError` naming the
  expected range ([0, 255] data would otherwise give a huge, meaningless FID).
* Images that overshoot [-1, 1] slightly (samplers do): clamped, with a note saying how much.
* Images with no negative value anywhere: a note that they look like [0, 1] data (use 2 * x - 1).
  Not an error: [0, 1] lies inside [-1, 1], so such samples cannot be told apart from genuine
  all-bright [-1, 1] samples; the metric is computed as given.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Beyond this |value| an image is not an overshooting [-1, 1] sample but data on another scale.
MAX_OVERSHOOT = 3.0


class SampleError(ValueError):
    """Samples that no metric can use; the message says what is wrong and the expected form."""


def _rescale_hint(lo: float, hi: float) -> str:
    if lo >= 0 and hi > 1.5:
        return " (they look like 0..255 pixels: use x / 127.5 - 1)"
    return ""


def check_samples(samples: Tensor, *, what: str = "samples") -> tuple[Tensor, list[str]]:
    """Validate samples; return them as float32 (images clamped to [-1, 1]) and notes for the user.

    Raises:
        SampleError: non-finite values, an integer dtype, or images far outside [-1, 1].
    """
    x = torch.as_tensor(samples)
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        raise SampleError(
            f"{what} have integer dtype {str(x.dtype).removeprefix('torch.')} (values {lo:g}..{hi:g}); etsdm "
            f"expects float images in [-1, 1]{_rescale_hint(lo, hi) or ' (e.g. x / 127.5 - 1 for 0..255 pixels)'}"
        )
    if x.is_complex():
        raise SampleError(f"{what} are complex numbers; expected real floats")
    if x.numel() == 0:
        raise SampleError(f"{what} are empty (shape {tuple(x.shape)})")
    bad = ~torch.isfinite(x)
    if bad.any():
        nan, inf = int(torch.isnan(x).sum()), int(bad.sum()) - int(torch.isnan(x).sum())
        rows = int(bad.reshape(x.shape[0], -1).any(1).sum()) if x.ndim > 1 else int(bad.any())
        raise SampleError(
            f"{what} contain {nan} NaN and {inf} infinite values (in {rows} of {x.shape[0]} samples): no metric "
            "is meaningful; the model or sampler diverged, or the file is broken"
        )
    x = x.float()
    notes: list[str] = []
    if x.ndim == 4:
        lo, hi = float(x.min()), float(x.max())
        if max(-lo, hi) > MAX_OVERSHOOT:
            raise SampleError(
                f"{what} range over [{lo:.4g}, {hi:.4g}]; expected images in [-1, 1] (slight sampler overshoot up "
                f"to ±{MAX_OVERSHOOT:g} is clamped){_rescale_hint(lo, hi)}"
            )
        if lo < -1 or hi > 1:
            share = float(((x < -1) | (x > 1)).float().mean())
            notes.append(f"{what} overshoot [-1, 1] (range [{lo:.3g}, {hi:.3g}], {100 * share:.2g}% of values): "
                         "clamped to [-1, 1], as saving them as images would")
            x = x.clamp(-1, 1)
        if lo >= 0:  # [-1, 1] samples of real data have dark (negative) pixels somewhere
            notes.append(f"{what} have no negative value (range [{lo:.3g}, {hi:.3g}]): if they are [0, 1] images, "
                         "rescale them with 2 * x - 1 (etsdm expects [-1, 1]); measured as given")
    return x, notes
