"""An image folder (PNG / JPEG, any size), the way FFHQ, CelebA-HQ, AFHQ or LSUN arrive.

* Files: every ``.png``, ``.jpg``, ``.jpeg`` (any case) under ``root``, recursively, following
  symlinks, in sorted path order; names starting with "." (e.g. macOS ``._x.jpg``) are ignored.
* Each item: decode (PIL), convert to grey ("L", channels=1) or RGB (channels=3; an alpha channel
  is dropped, 16-bit grey is scaled to 8 bits), resize the shorter side to ``resolution``
  (bicubic, antialiased), centre-crop a square, scale to [-1, 1], optionally flip left-right with
  probability 1/2 (torch's default generator). Large JPEGs are decoded at a reduced DCT scale
  (PIL ``draft``) that still leaves both sides >= resolution.
* Validation is cheap at construction and complete at use. ``verify="header"`` (default) reads the
  first 8 bytes of each file and checks the PNG or JPEG signature (a 100k-image folder opens in
  seconds); ``"full"`` decodes every file at construction (slow, thorough); ``"none"`` checks
  nothing. Decoding errors at ``__getitem__`` are caught the same way.
* A bad file (wrong signature, truncated or corrupt data) raises :class:`BadImageError` naming
  it, unless ``skip_bad=True``: then it is skipped, counted in ``dataset.skipped`` (paths in
  ``dataset.skipped_files``) and a warning is issued. At construction a skipped file is removed
  from the list; at ``__getitem__`` (a file that passed the header check but does not decode) the
  item is replaced by the next good file in order (index i+1, i+2, ... wrapping), so the
  replacement is deterministic. With DataLoader workers, lazily found files are counted in the
  worker's copy of the dataset only (the warning still appears).
* Format: ``channels`` and ``resolution`` left as None are inferred (:func:`infer_format`) from the
  headers of up to 64 files spread over the sorted list: 1 channel when every one is grayscale
  (PIL modes L, LA, I, I;16, 1, F), else 3; the resolution is the smallest shorter side, rounded
  down to a multiple of 8. ``dataset.inferred`` says what was inferred and from what.
* Splits: ``holdout`` (a count, or a fraction in (0, 1)) reserves files for "test", chosen by a
  fixed permutation (``split_seed``, default 0) of the sorted list, independent of the run's seed;
  "train" is the rest and "all" every file. With holdout = 0, "train" is every file and "test"
  is an error (point ``root`` at a separate test folder instead).
* Class labels (``labels=True``, config ``data.labels``): one class per immediate subfolder of
  ``root`` that holds images (``root/cat/**`` and ``root/dog/**``: classes "cat" = 0, "dog" = 1, in
  sorted order, ``class_names`` / ``num_classes``); items are then ``{"x0": image, "cond":
  {"labels": class}}`` (:mod:`etsdm.data.items`). Classes come from every file before the split,
  so train and test share them. An image directly in ``root``, or fewer than 2 classes, is an error.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .items import labelled
from .transforms import pil_to_tensor, random_hflip, resize_center_crop

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
Verify = Literal["header", "full", "none"]
FolderSplit = Literal["train", "test", "all"]
# Everything PIL raises on a bad file: truncated / corrupt data (OSError, SyntaxError, EOFError,
# ValueError, struct errors surface as these), decompression bombs.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class BadImageError(ValueError):
    """An image file that cannot be read; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"unreadable image file {self.path}: {reason} "
            "(fix or remove it, or set skip_bad=True / data.skip_bad: true to skip and count bad files)"
        )


def scan_images(root: str | os.PathLike) -> list[str]:
    """Sorted paths of every PNG/JPEG under ``root`` (recursive). Raises if root is missing or holds none."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise FileNotFoundError(f"image folder {str(root_path)!r} does not exist")
    if not root_path.is_dir():
        raise NotADirectoryError(f"image folder {str(root_path)!r} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(dirpath, name))
    if not files:
        raise ValueError(
            f"image folder {str(root_path)!r} holds no images (searched recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(files)


GRAY_MODES: tuple[str, ...] = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
INFER_FILES = 64  # files whose headers infer_format reads


@dataclass(frozen=True)
class FolderFormat:
    """What :func:`infer_format` found: channels, resolution, and a sentence saying what was inferred."""

    channels: int
    resolution: int
    note: str


def infer_format(root: str | os.PathLike, *, channels: int | None = None, resolution: int | None = None,
                 max_files: int = INFER_FILES) -> FolderFormat:
    """Channels and resolution of an image folder where not given, from the headers (no decoding)
    of up to ``max_files`` files spread evenly over its sorted list.

    channels: 1 if every inspected image is grayscale, else 3. resolution: the smallest shorter
    side among them, rounded down to a multiple of 8 (UNet levels halve it), at least 8.
    """
    files = scan_images(root)
    picked = files[:: max(1, -(-len(files) // max_files))][:max_files]
    modes, sides = [], []
    for path in picked:
        try:
            with Image.open(path) as img:  # reads the header only
                modes.append(img.mode)
                sides.append(min(img.size))
        except _DECODE_ERRORS:
            continue
    if not modes:
        raise ValueError(f"image folder {str(root)!r}: none of the {len(picked)} files inspected opens as an image")
    notes = []
    if channels is None:
        grey = sum(mode in GRAY_MODES for mode in modes)
        channels = 1 if grey == len(modes) else 3
        notes.append(f"channels={channels} ({grey} of {len(modes)} inspected images are grayscale)")
    if resolution is None:
        resolution = max(8, min(sides) // 8 * 8)
        notes.append(f"resolution={resolution} (smallest shorter side {min(sides)} px of {len(modes)} inspected "
                     "images, rounded down to a multiple of 8)")
    note = f"{', '.join(notes)}; inferred from {root} (set data.channels / data.resolution to choose)" if notes else ""
    return FolderFormat(channels, resolution, note)


def folder_classes(root: str | os.PathLike, files: list[str]) -> list[str]:
    """The class names of a labelled image folder: its immediate subfolders holding images, sorted.

    Raises:
        ValueError: an image directly in ``root`` (it would have no class), or fewer than 2 classes.
    """
    root_path = Path(root).expanduser()
    top = [f for f in files if len(Path(f).relative_to(root_path).parts) == 1]
    if top:
        shown = ", ".join(Path(f).name for f in top[:3]) + (", ..." if len(top) > 3 else "")
        raise ValueError(f"image folder {str(root_path)!r} with data.labels: true takes one class per subfolder "
                         f"(root/<class>/<images>), but {len(top)} image(s) lie directly in it ({shown}); move them "
                         "into class subfolders or set data.labels: false")
    names = sorted({Path(f).relative_to(root_path).parts[0] for f in files})
    if len(names) < 2:
        raise ValueError(f"image folder {str(root_path)!r} with data.labels: true needs at least 2 class subfolders "
                         f"holding images, found {len(names)} ({', '.join(names) or 'none'})")
    return names


def check_header(path: str) -> None:
    """Raise BadImageError unless the file starts with a PNG or JPEG signature (reads 8 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise BadImageError(path, f"cannot open ({e.strerror or e})") from e
    if not (head.startswith(PNG_SIGNATURE) or head.startswith(JPEG_SIGNATURE)):
        raise BadImageError(path, "not a PNG or JPEG file (bad signature)")


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: scale to 8 bits (convert() would clip)
        arr = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def load_image(path: str, resolution: int, channels: int) -> Tensor:
    """Decode, convert, resize-and-centre-crop one file to float32 (C, R, R) in [-1, 1]; BadImageError if unreadable."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("L" if channels == 1 else "RGB", (resolution, resolution))
            img.load()
            out = resize_center_crop(_to_mode(img, channels), resolution)
    except _DECODE_ERRORS as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from e
    return pil_to_tensor(out)


def holdout_indices(n: int, holdout: int | float, split_seed: int) -> np.ndarray:
    """Indices (sorted) of the files reserved for "test" among n sorted files."""
    count = round(holdout * n) if isinstance(holdout, float) and 0 < holdout < 1 else int(holdout)
    if count < 0 or count >= n:
        raise ValueError(f"folder: holdout must leave at least one training image (got holdout={holdout!r}, {n} files)")
    return np.sort(np.random.default_rng(split_seed).permutation(n)[:count])


class ImageFolderDataset(Dataset):
    """Images from a folder as float32 (C, R, R) in [-1, 1] (conventions in the module docstring).

    Args:
        root: the folder (searched recursively).
        split: "train", "test" or "all" (see ``holdout``).
        resolution: output side R (None: inferred, see :func:`infer_format`).
        channels: 1 (grey) or 3 (RGB); None: inferred (1 if every inspected file is grayscale).
        hflip: random left-right flips.
        skip_bad: skip and count unreadable files instead of raising BadImageError.
        verify: "header" (default), "full" or "none": what is checked at construction.
        holdout: number (int) or fraction (float in (0, 1)) of files reserved for "test".
        split_seed: seed of the holdout permutation (fixed default 0).
        labels: class labels from the immediate subfolders (module docstring); items become dicts.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: FolderSplit = "train",
        resolution: int | None = None,
        channels: int | None = None,
        hflip: bool = False,
        skip_bad: bool = False,
        verify: Verify = "header",
        holdout: int | float = 0,
        split_seed: int = 0,
        labels: bool = False,
    ):
        self.inferred = ""
        if channels is None or resolution is None:
            fmt = infer_format(root, channels=channels, resolution=resolution)
            channels, resolution, self.inferred = fmt.channels, fmt.resolution, fmt.note
        if channels not in (1, 3):
            raise ValueError(f"folder: channels must be 1 or 3, got {channels!r}")
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"folder: resolution must be a positive integer (the output side), got {resolution!r}")
        if verify not in ("header", "full", "none"):
            raise ValueError(f"folder: verify must be 'header', 'full' or 'none', got {verify!r}")
        self.root = str(root)
        self.resolution, self.channels, self.hflip, self.skip_bad = resolution, channels, hflip, skip_bad
        self.shape: tuple[int, ...] = (channels, resolution, resolution)
        self.skipped = 0
        self.skipped_files: list[str] = []
        self._bad: set[int] = set()
        files = scan_images(root)
        self.labelled = labels
        if labels:
            self.class_names: list[str] = folder_classes(root, files)
            self.num_classes = len(self.class_names)
            self._class_index = {name: k for k, name in enumerate(self.class_names)}
        self.files = self._select_split(files, split, holdout, split_seed)
        self.files = self._verify(self.files, verify)
        if not self.files:
            raise ValueError(f"image folder {self.root!r}: every image of split {split!r} was unreadable and skipped")

    @staticmethod
    def _select_split(files: list[str], split: str, holdout: int | float, split_seed: int) -> list[str]:
        if split not in ("train", "test", "all"):
            raise ValueError(f"folder: split must be 'train', 'test' or 'all', got {split!r}")
        if split == "all":
            return files
        test = holdout_indices(len(files), holdout, split_seed)
        if split == "test":
            if len(test) == 0:
                raise ValueError("folder: split 'test' needs holdout > 0 (or point root at a separate test folder)")
            return [files[i] for i in test]
        mask = np.ones(len(files), dtype=bool)
        mask[test] = False
        return [f for f, keep in zip(files, mask, strict=True) if keep]

    def _verify(self, files: list[str], verify: str) -> list[str]:
        if verify == "none":
            return files

        def check(path: str) -> BadImageError | None:
            try:
                check_header(path) if verify == "header" else load_image(path, self.resolution, self.channels)
            except BadImageError as e:
                return e
            return None

        # Reading 8 bytes per file is I/O-bound: threads overlap the latency of cold / network disks.
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(files) // 256))) as pool:
            errors = list(pool.map(check, files, chunksize=64))
        good, bad = [], []
        for path, err in zip(files, errors, strict=True):
            if err is None:
                good.append(path)
            elif not self.skip_bad:
                raise err
            else:
                bad.append(path)
        if bad:
            self._record_skips(bad)
        return good

    def _record_skips(self, paths: list[str]) -> None:
        self.skipped += len(paths)
        self.skipped_files.extend(paths)
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        warnings.warn(f"image folder {self.root!r}: skipped {len(paths)} unreadable file(s): {shown}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, path: str) -> int:
        """The class index of one of the folder's files (its immediate subfolder under root)."""
        return self._class_index[Path(path).relative_to(Path(self.root).expanduser()).parts[0]]

    @property
    def labels(self) -> Tensor:
        """The class index of every file, int64 (N,) (labelled folders only)."""
        if not self.labelled:
            raise AttributeError("labels: this image folder was opened without labels (data.labels: false)")
        return torch.tensor([self.label_of(f) for f in self.files], dtype=torch.int64)

    def __getitem__(self, i: int) -> Tensor | dict:
        n = len(self.files)
        if not -n <= i < n:
            raise IndexError(f"image folder index {i} out of range for {n} images")
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                x = load_image(self.files[j], self.resolution, self.channels)
            except BadImageError:
                if not self.skip_bad:
                    raise
                self._bad.add(j)
                self._record_skips([self.files[j]])
                continue
            x = random_hflip(x) if self.hflip else x
            return labelled(x, self.label_of(self.files[j])) if self.labelled else x
        raise ValueError(f"image folder {self.root!r}: no readable image left (all {n} files failed to decode)")
