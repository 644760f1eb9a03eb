"""One call for every sample-quality metric: what ``etsdm evaluate`` runs, and what ``etsdm sample``
(or a notebook) can call right after sampling.

    results = evaluate_samples(x, "digits", seeds=(0, 1, 2))     # FID-n with its floor
    for line in format_results(results): print(line)

``reference`` is ``"digits"`` (train split as the FID reference, test split for the floor),
``"gmm"`` (the default ring mixture) or a :class:`~etsdm.analytic.GaussianMixture`, an
:class:`ImageSet` (real images of any other data, e.g. an image folder: ``fid-own`` by default),
or a tensor of reference images (``psnr`` / ``ssim`` targets, or the Inception-v3 FID reference).

FID needs a feature space: ``fid-digits`` uses the digits classifier (digits only), ``fid-own`` a
small CNN trained now on the reference images themselves (:func:`~etsdm.metrics.features.
train_image_feature_net`), ``fid-inception`` Inception-v3 from a local weights file.

Samples pass :func:`~etsdm.metrics.checks.check_samples` first: NaN/inf, an integer dtype or
images far outside [-1, 1] raise :class:`~etsdm.metrics.checks.SampleError`; images that overshoot
[-1, 1] slightly are clamped (as saving them as images would) and a warning is returned with the
results. The mixture metrics use the raw vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..analytic import GaussianMixture
from .checks import check_samples
from .stats import format_pm

METRICS: tuple[str, ...] = ("fid-digits", "fid-own", "fid-inception", "gmm", "psnr", "ssim")
MAX_REFERENCE_IMAGES = 5000  # real images an image-folder FID reference holds at most (fixed random subset)


@dataclass
class ImageSet:
    """Real images as an FID reference: ``images`` give the statistics, ``held_out`` (disjoint
    real images, e.g. a folder's test split) the real-vs-real floor; None: a random split of
    ``images`` per seed. ``source`` says where they came from."""

    images: Tensor
    held_out: Tensor | None = None
    source: str = ""


def resolve_reference(reference: Any) -> tuple[str, Any]:
    """(kind, reference data): kind 'gmm' | 'images' | 'file' | 'digits' (the digits train images)."""
    if isinstance(reference, GaussianMixture):
        return "gmm", reference
    if isinstance(reference, ImageSet):
        return "images", reference
    if isinstance(reference, Tensor):
        return "file", reference.float()
    if reference == "digits":
        from .features import digits_split

        return "digits", digits_split("train")[0]
    if reference == "gmm":
        from ..data import make_mixture

        return "gmm", make_mixture(None)
    raise ValueError(
        f"reference must be 'digits', 'gmm', a GaussianMixture, an ImageSet or a tensor of images, got {reference!r}"
    )


def default_metrics(reference: Any) -> tuple[str, ...]:
    """fid-digits for digits, fid-own for an ImageSet, gmm for a mixture, psnr + ssim for paired images."""
    kind, _ = resolve_reference(reference)
    return {"digits": ("fid-digits",), "images": ("fid-own",), "gmm": ("gmm",), "file": ("psnr", "ssim")}[kind]


def evaluate_samples(
    samples: Tensor,
    reference: Any,
    metrics: Sequence[str] | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n: int | None = None,
    feature_net: nn.Module | None = None,
    inception_weights: str | Path | None = None,
    targets: Tensor | None = None,
    pair_names: tuple[str, str] = ("samples", "targets"),
) -> dict[str, Any]:
    """Every requested metric of ``samples`` (values in [-1, 1]), as a JSON-ready dict.

    Args:
        samples: (N, C, H, W) images or (N, D) vectors.
        reference: see the module docstring.
        metrics: names from :data:`METRICS` (default :func:`default_metrics`).
        seeds: each metric's random draws per seed; reported as mean ± std over them.
        n: FID-n (default: as many as samples and the held-out split allow).
        feature_net: the digits feature net for fid-digits, or an image feature net for fid-own
            (default: trained now, deterministically, in seconds).
        inception_weights: LOCAL Inception-v3 weights for ``fid-inception``.
        targets: ground truth paired with ``samples`` for psnr / ssim (default: ``reference``).
        pair_names: where samples and targets came from (e.g. two files), for :func:`check_pairs`.

    Raises:
        SampleError: samples no metric can use (see :func:`~etsdm.metrics.checks.check_samples`).
        ValueError: a metric that does not fit the reference, or shapes that do not match.
    """
    from .fid import fid_with_floor, inception_fid
    from .gmm import gmm_metrics
    from .image import psnr, ssim

    kind, ref = resolve_reference(reference)
    metrics = tuple(metrics or default_metrics(reference))
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {', '.join(METRICS)}")
    x, notes = check_samples(samples)  # NaN/inf, integer dtype, wrong range: SampleError; overshoot: clamped
    images = x  # image metrics see the samples as they would be saved
    out: dict[str, Any] = {"n_samples": int(x.shape[0]), "seeds": list(seeds), "reference": kind}
    if notes:
        out["warnings"] = notes
    for metric in metrics:
        if metric == "fid-digits":
            if kind != "digits":
                raise ValueError("fid-digits needs the 'digits' reference")
            net, report = _digits_net(feature_net)
            from .features import digits_split

            out[metric] = {
                **fid_with_floor(images, ref, digits_split("test")[0], net, n=n, seeds=seeds),
                "feature_net": report,
            }
        elif metric == "fid-own":
            if kind not in ("images", "file") or x.ndim != 4:
                raise ValueError("fid-own needs image samples and real reference images (an image folder or .npz)")
            out[metric] = _fid_own(images, ref, feature_net, n, seeds)
        elif metric == "fid-inception":
            if kind == "gmm" or inception_weights is None:
                raise ValueError("fid-inception needs image references and a local --inception-weights file")
            value = inception_fid(images, ref.images if kind == "images" else ref, inception_weights)
            out[metric] = {"fid": value, "n": int(x.shape[0]), "n_ref": int(ref.shape[0])}
        elif metric == "gmm":
            if kind != "gmm":
                raise ValueError("metric gmm needs a Gaussian-mixture reference")
            out[metric] = gmm_metrics(x.double(), ref, seeds=seeds)
        else:
            target = targets if targets is not None else ref
            if kind == "gmm" or not isinstance(target, Tensor):
                raise ValueError(f"{metric} needs paired target images of the samples' shape {tuple(x.shape)}")
            check_pairs(x, target, pair_names)
            vals = (psnr if metric == "psnr" else ssim)(images, target.float())
            out[metric] = _per_image_summary(vals)
    return out


def check_pairs(samples: Tensor, targets: Tensor, names: tuple[str, str] = ("samples", "targets")) -> None:
    """PSNR / SSIM compare row i of ``samples`` with row i of ``targets``: same count, same image
    shape. ``names`` say where each came from (e.g. the two files) in the error.

    Raises:
        ValueError: the counts or the image shapes differ (both named, with their shapes).
    """
    a, b = names
    if samples.ndim != 4 or targets.ndim != 4:
        raise ValueError(f"psnr / ssim compare images (N, C, H, W): {a} has shape {tuple(samples.shape)}, "
                         f"{b} {tuple(targets.shape)}")
    if samples.shape[0] != targets.shape[0]:
        raise ValueError(f"psnr / ssim pair image i of {a} with image i of {b}, but {a} holds "
                         f"{samples.shape[0]} images and {b} {targets.shape[0]}")
    if samples.shape[1:] != targets.shape[1:]:
        raise ValueError(f"psnr / ssim need images of one shape: {a} has (C, H, W) = {tuple(samples.shape[1:])}, "
                         f"{b} {tuple(targets.shape[1:])}")


def _per_image_summary(vals: Tensor) -> dict[str, Any]:
    """Mean ± std over images of a per-image metric; PSNR of identical images is inf."""
    finite = torch.isfinite(vals)
    if len(vals) < 2 or not bool(finite.any()):  # one image, or every image identical to its target
        std = 0.0
    else:  # some identical (inf) and some not: no finite spread
        std = float(vals.std()) if bool(finite.all()) else float("nan")
    return {
        "mean": float(vals.mean()),
        "std_over_images": std,
        "n": int(len(vals)),
        "identical_images": int((~finite).sum()),  # PSNR: MSE = 0
        "note": "deterministic: seeds do not change it",
    }


def _fid_own(images: Tensor, ref: Any, net: nn.Module | None, n: int | None, seeds: Sequence[int]) -> dict[str, Any]:
    """FID-n with its floor in the features of a CNN trained on the reference images themselves."""
    from .features import train_image_feature_net
    from .fid import fid_with_floor

    real = ref if isinstance(ref, ImageSet) else ImageSet(ref)
    if tuple(real.images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"fid-own: samples {tuple(images.shape[1:])} and reference images "
                         f"{tuple(real.images.shape[1:])} differ in shape")
    report: dict[str, Any] = {"source": "given"}
    if net is None:
        net, trained = train_image_feature_net(real.images)
        report = dict(trained.__dict__)
    result = fid_with_floor(images, real.images, real.held_out, net, n=n, seeds=seeds)
    floor = "held-out images" if real.held_out is not None else "a random split of the reference images per seed"
    return {**result, "feature_net": report, "reference": real.source or "reference images",
            "n_reference": int(real.images.shape[0]), "floor_from": floor}


def _digits_net(net: nn.Module | None) -> tuple[nn.Module, dict]:
    if net is not None:
        return net, {"source": "given"}
    from .features import train_feature_net

    trained, report = train_feature_net()
    return trained, {"source": "trained now (etsdm features defaults)", **report.__dict__}


def format_results(results: dict[str, Any]) -> list[str]:
    """Human-readable lines: value ± std over seeds, with n and the floor / true-vs-true value."""
    lines = [f"warning: {note}" for note in results.get("warnings", [])]
    if "fid-digits" in results:
        r = results["fid-digits"]
        lines.append(
            f"FID-{r['n']} (digits features): {format_pm(r['fid'], r['fid_std'])}   "
            f"real-vs-real floor at n={r['n']}: {format_pm(r['floor'], r['floor_std'])}"
        )
    if "fid-own" in results:
        r, net = results["fid-own"], results["fid-own"]["feature_net"]
        how = (f"{net['source']}, held-out rotation accuracy {net['rotation_accuracy']:.2f}"
               if "rotation_accuracy" in net else "a given feature net")
        lines.append(f"feature space: {how}; reference: {r['reference']} (n={r['n_reference']}); "
                     f"floor from {r['floor_from']}")
        lines.append(
            f"FID-{r['n']} (own features): {format_pm(r['fid'], r['fid_std'])}   "
            f"real-vs-real floor at n={r['n']}: {format_pm(r['floor'], r['floor_std'])}"
        )
    if "fid-inception" in results:
        r = results["fid-inception"]
        lines.append(f"FID (Inception-v3, {r['n']} vs {r['n_ref']} images): {r['fid']:.4g}")
    for key, r in results.get("gmm", {}).items():
        lines.append(
            f"{key:<18} {format_pm(r['value'], r['value_std']):<20} true-vs-true (n={r['n']}): "
            f"{format_pm(r['true'], r['true_std'])}"
        )
    for metric in ("psnr", "ssim"):
        if metric in results:
            r = results[metric]
            same = f" ({r['identical_images']} identical to their targets)" if r.get("identical_images") else ""
            lines.append(f"{metric.upper()}: {format_pm(r['mean'], r['std_over_images'])} over {r['n']} images{same}")
    return lines


def as_tensor(array: Any) -> Tensor:
    """A numpy array (e.g. from an .npz) as a float32 tensor."""
    return torch.as_tensor(array).float()
