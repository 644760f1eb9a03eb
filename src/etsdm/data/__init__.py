"""Data sets for etsdm: embedded digits, the analytic Gaussian mixture, image folders, SR pairs.

Conventions: images are float32 (C, H, W) in [-1, 1] (``denormalize`` maps them to [0, 1]);
Gaussian-mixture samples are float32 (D,); super-resolution and labelled items are dicts
``{"x0", "cond", ...}`` (:mod:`etsdm.data.items`, :func:`split_batch`). Build any of them with
:func:`make_dataset`.
"""

from .digits import DigitsDataset, digits_arrays
from .factory import DATASETS, data_shape, make_dataset, stack_images
from .folder import IMAGE_EXTENSIONS, BadImageError, FolderFormat, ImageFolderDataset, infer_format, scan_images
from .gmm import GMMDataset, make_mixture
from .items import labelled, split_batch
from .sr import DEFAULT_SR_FACTOR, SuperResolutionDataset
from .transforms import area_downsample, denormalize, resize_center_crop, upsample

__all__ = [
    "DATASETS",
    "DEFAULT_SR_FACTOR",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "DigitsDataset",
    "FolderFormat",
    "GMMDataset",
    "ImageFolderDataset",
    "SuperResolutionDataset",
    "area_downsample",
    "data_shape",
    "denormalize",
    "digits_arrays",
    "infer_format",
    "labelled",
    "make_dataset",
    "make_mixture",
    "resize_center_crop",
    "scan_images",
    "split_batch",
    "stack_images",
    "upsample",
]
