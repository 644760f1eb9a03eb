"""The digits feature network: a small CNN classifier on sklearn's 8x8 digits, whose penultimate
layer is the feature space of the digits Fréchet distance (FID's Inception-v3, scaled down).

Training is deterministic (fixed seed, fixed batch order, CPU) and takes seconds:
``etsdm features --out digits_features.safetensors``. The file is safetensors; its metadata holds
the architecture, the seed and the accuracy on the held-out split.

Images enter as (N, 1, 8, 8) (or (N, 64)) in [-1, 1], the scale of etsdm's digits dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

FORMAT = "etsdm-digits-features/1"
NUM_FEATURES = 64


def digits_split(split: str) -> tuple[Tensor, Tensor]:
    """Digits images (N, 1, 8, 8) in [-1, 1] and labels (N,) for ``split`` in train | test.

    The data package's fixed held-out split (``etsdm.data.digits_arrays``: 1,497 train, 300
    test, stratified), so the classifier never sees the images the FID floor is measured on.
    """
    from ..data import digits_arrays

    images, labels = digits_arrays(split)
    return torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.as_tensor(labels).long()


class DigitsFeatureNet(nn.Module):
    """conv(1→16) → conv(16→32) → pool → linear(512→64) = features → ReLU → linear(64→10).

    ``forward`` returns the 64 float64 features (the pre-activation of the penultimate layer),
    so it plugs into torchmetrics' FrechetInceptionDistance as a custom ``feature`` module.
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
        )
        self.embed = nn.Linear(32 * 4 * 4, NUM_FEATURES)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(NUM_FEATURES, 10))

    @staticmethod
    def _as_images(x: Tensor) -> Tensor:
        if x.ndim == 2 and x.shape[1] == 64:
            x = x.reshape(-1, 1, 8, 8)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"digits features need (N, 1, 8, 8) or (N, 64) images, got {tuple(x.shape)}")
        return x.float()

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.conv(self._as_images(x)))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).double()


@dataclass
class TrainReport:
    train_accuracy: float
    test_accuracy: float
    epochs: int
    seed: int
    n_train: int
    n_test: int


def accuracy(net: DigitsFeatureNet, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((net.logits(x).argmax(1) == y).float().mean())


def train_feature_net(
    *, epochs: int = 20, seed: int = 0, batch_size: int = 128, lr: float = 3e-3
) -> tuple[DigitsFeatureNet, TrainReport]:
    """Train the classifier on the digits train split, deterministically (CPU, fixed seed)."""
    x_tr, y_tr = digits_split("train")
    x_te, y_te = digits_split("test")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsFeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is fastest, and the result cannot depend on threads
    try:
        _train_epochs(net, opt, x_tr, y_tr, epochs, batch_size, gen)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    report = TrainReport(accuracy(net, x_tr, y_tr), accuracy(net, x_te, y_te), epochs, seed, len(x_tr), len(x_te))
    return net, report


def _train_epochs(net, opt, x_tr: Tensor, y_tr: Tensor, epochs: int, batch_size: int, gen: torch.Generator) -> None:
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for lo in range(0, len(perm), batch_size):
            idx = perm[lo : lo + batch_size]
            loss = nn.functional.cross_entropy(net.logits(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def save_feature_net(net: DigitsFeatureNet, path: str | Path, report: TrainReport) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "report": json.dumps(report.__dict__)}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def load_feature_net(path: str | Path) -> tuple[DigitsFeatureNet, dict]:
    """Load a feature net written by :func:`save_feature_net` (safetensors; no pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"digits feature net {path} does not exist; make one with `etsdm features --out {path}`"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own SafetensorError on a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an etsdm digits feature net (metadata format {meta.get('format')!r})")
    net = DigitsFeatureNet()
    net.load_state_dict(load_file(str(path)))
    net.eval()
    return net, json.loads(meta.get("report", "{}"))


# ---------------------------------------------------------------------------------------------
# Any image data (folders): a feature net trained on the reference images themselves
# ---------------------------------------------------------------------------------------------
class ImageFeatureNet(nn.Module):
    """Features for FID on image data without a feature net of its own (image folders): the 64-d
    penultimate layer of a small CNN trained, self-supervised, to tell by how much an image was
    rotated (0, 90, 180 or 270 degrees; Gidaris et al. 2018), so no labels are needed.

    Images are average-pooled to at most ``side`` px first, so the cost stays small at any size.
    For paper-scale comparisons use Inception-v3 (``fid-inception``) instead.
    """

    num_features = NUM_FEATURES

    def __init__(self, channels: int, side: int = 32) -> None:
        super().__init__()
        self.channels, self.side = channels, side
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.embed = nn.Linear(32 * 4 * 4, NUM_FEATURES)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(NUM_FEATURES, 4))

    def _prep(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"image features: expected (N, {self.channels}, H, W) images, got {tuple(x.shape)}")
        if max(x.shape[-2:]) > self.side:
            x = nn.functional.adaptive_avg_pool2d(x, self.side)
        return x.float()

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.conv(self._prep(x)))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).double()


@dataclass
class ImageFeatureReport:
    rotation_accuracy: float  # on the held-out part of the images (chance: 0.25)
    epochs: int
    seed: int
    n_train: int
    n_val: int
    source: str = "a CNN trained now on the reference images (rotation prediction)"


def _rotated(x: Tensor, k: Tensor) -> Tensor:
    """Each square image x[i] rotated by k[i] quarter turns."""
    out = x.clone()
    for turns in range(1, 4):
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(2, 3))
    return out


def train_image_feature_net(
    images: Tensor, *, epochs: int = 30, seed: int = 0, batch_size: int = 128, lr: float = 3e-3, val: float = 0.2
) -> tuple[ImageFeatureNet, ImageFeatureReport]:
    """Train :class:`ImageFeatureNet` on ``images`` (N, C, S, S) by rotation prediction, deterministically
    (CPU, fixed seed, one thread); a ``val`` fraction is held out to report its accuracy."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2] or len(images) < 2:
        raise ValueError(f"image features: need >= 2 square images (N, C, S, S), got {tuple(images.shape)}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=gen)
    n_val = max(1, round(val * len(images)))
    x_val, x_tr = images[perm[:n_val]].float(), images[perm[n_val:]].float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ImageFeatureNet(images.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is fastest, and the result cannot depend on threads
    try:
        for _ in range(epochs):
            order = torch.randperm(len(x_tr), generator=gen)
            for lo in range(0, len(order), batch_size):
                x = x_tr[order[lo : lo + batch_size]]
                k = torch.randint(0, 4, (len(x),), generator=gen)
                loss = nn.functional.cross_entropy(net.logits(_rotated(x, k)), k)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    k_val = torch.arange(len(x_val)) % 4
    with torch.no_grad():
        acc = float((net.logits(_rotated(x_val, k_val)).argmax(1) == k_val).float().mean())
    return net, ImageFeatureReport(acc, epochs, seed, len(x_tr), n_val)
