"""Sample-quality metrics: Fréchet distance (digits features, features of a CNN trained on the
reference images themselves, or Inception-v3; via torchmetrics), exact Gaussian-mixture metrics,
PSNR/SSIM. Samples are checked first (:func:`check_samples`). Every metric reports mean ± std over
seeds and, where it has one, the true-vs-true (real-vs-real) value at the same n beside it."""

from .checks import SampleError, check_samples
from .evaluate import ImageSet, evaluate_samples, format_results
from .features import (
    DigitsFeatureNet,
    ImageFeatureNet,
    digits_split,
    load_feature_net,
    save_feature_net,
    train_feature_net,
    train_image_feature_net,
)
from .fid import fid_with_floor, frechet_distance, identity_features, inception_available, inception_fid
from .gmm import gmm_metrics, mmd2, sample_stats, sliced_wasserstein
from .image import psnr, ssim
from .stats import format_pm, summarize

__all__ = [
    "DigitsFeatureNet",
    "ImageFeatureNet",
    "ImageSet",
    "SampleError",
    "check_samples",
    "digits_split",
    "evaluate_samples",
    "format_results",
    "fid_with_floor",
    "format_pm",
    "frechet_distance",
    "gmm_metrics",
    "identity_features",
    "inception_available",
    "inception_fid",
    "load_feature_net",
    "mmd2",
    "psnr",
    "sample_stats",
    "save_feature_net",
    "sliced_wasserstein",
    "ssim",
    "summarize",
    "train_feature_net",
    "train_image_feature_net",
]
