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

import numpy as np
import torch
from torch import Tensor, nn

FORMAT = "etsdm-digits-features/1"
NUM_FEATURES = 64


def digits_split(split: str) -> tuple[Tensor, Tensor]:
    """Digits images (N, 1, 8, 8) in [-1, 1] and labels (N,) for ``split`` in train | test.

    Uses etsdm.data's digits split when it exposes labels, else the same rule here:
    sklearn's ``load_digits`` scaled by x / 8 − 1 and split with
    ``train_test_split(test_size=0.2, random_state=0, stratify=labels)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    try:  # the data package's own split, if it lands with labels
        from ..data import digits_arrays  # type: ignore[attr-defined]

        images, labels = digits_arrays(split)
        return torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.as_tensor(labels).long()
    except (ImportError, AttributeError):
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 8.0 - 1.0  # pixel values 0..16 -> [-1, 1]
    idx_train, idx_test = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=digits.target)
    idx = idx_train if split == "train" else idx_test
    return torch.from_numpy(x[idx]).reshape(-1, 1, 8, 8), torch.from_numpy(digits.target[idx]).long()


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
    *, epochs: int = 30, seed: int = 0, batch_size: int = 64, lr: float = 2e-3
) -> tuple[DigitsFeatureNet, TrainReport]:
    """Train the classifier on the digits train split, deterministically (CPU, fixed seed)."""
    x_tr, y_tr = digits_split("train")
    x_te, y_te = digits_split("test")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsFeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for lo in range(0, len(perm), batch_size):
            idx = perm[lo : lo + batch_size]
            loss = nn.functional.cross_entropy(net.logits(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    report = TrainReport(accuracy(net, x_tr, y_tr), accuracy(net, x_te, y_te), epochs, seed, len(x_tr), len(x_te))
    return net, report


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
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an etsdm digits feature net (metadata format {meta.get('format')!r})")
    net = DigitsFeatureNet()
    net.load_state_dict(load_file(str(path)))
    net.eval()
    return net, json.loads(meta.get("report", "{}"))
