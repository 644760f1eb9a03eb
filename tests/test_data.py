"""Data sets: digits split, Gaussian-mixture samples, image folders (good, corrupt, empty), SR pairs.

Expected values come from the sources themselves (sklearn's raw digits, the mixture's own
sampler, PIL round trips of known pixel patterns), never from a previous run of this code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from etsdm import GaussianMixture
from etsdm.data import (
    DATASETS,
    BadImageError,
    data_shape,
    denormalize,
    digits_arrays,
    make_dataset,
    split_batch,
    stack_images,
)
from etsdm.data.transforms import resize_center_crop, upsample


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------
def test_digits_split_sizes_disjoint_stratified_and_scaled():
    raw = load_digits()
    train, test = make_dataset("digits", split="train"), make_dataset("digits", split="test")
    assert (len(train), len(test)) == (1497, 300)
    assert data_shape(train) == (1, 8, 8) and train[0].shape == (1, 8, 8) and train[0].dtype == torch.float32
    # Each split image is one raw image (v / 8 - 1): recover raw indices, check disjoint + complete.
    flat = torch.as_tensor(raw.images.reshape(len(raw.images), -1) / 8.0 - 1.0, dtype=torch.float32)

    def raw_index(ds):
        d = torch.cdist(ds.images.reshape(len(ds), -1), flat)
        assert float(d.min(1).values.max()) < 1e-6  # every item is exactly a scaled raw image
        return d.argmin(1)

    i_train, i_test = raw_index(train), raw_index(test)
    assert torch.equal(train.labels, torch.as_tensor(raw.target)[i_train])
    assert torch.equal(test.labels, torch.as_tensor(raw.target)[i_test])
    # Raw digits contain a few duplicate images; count positions instead of matched indices.
    assert len(set(i_train.tolist()) | set(i_test.tolist())) >= 1797 - 20
    x_all, _ = digits_arrays("all")
    assert x_all.min() == -1.0 and x_all.max() == 1.0  # 0 -> -1, 16 -> 1
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32  # stratified: ~30 per class


def test_digits_split_is_a_partition_of_sklearn_order():
    x_all, y_all = digits_arrays("all")
    x_tr, y_tr = digits_arrays("train")
    x_te, y_te = digits_arrays("test")
    # Same multiset of (image, label) pairs: sort both sides by a hash of the row.
    key = lambda x, y: sorted(zip(map(bytes, x.reshape(len(x), -1).astype(np.float32)), y.tolist(), strict=True))  # noqa: E731
    assert key(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])) == key(x_all, y_all)
    x_tr2, y_tr2 = digits_arrays("train")  # deterministic
    assert np.array_equal(x_tr, x_tr2) and np.array_equal(y_tr, y_tr2)


def test_digits_resolution_and_channels():
    ds = make_dataset("digits", split="test", resolution=16, channels=3)
    x = ds[0]
    assert x.shape == (3, 16, 16) and data_shape(ds) == (3, 16, 16)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey repeated
    # the resize is PIL's bilinear resize (antialiased when shrinking) of the 8x8 original
    small = make_dataset("digits", split="test")[0][0].numpy()
    for res in (16, 5):
        ref = Image.fromarray(small, mode="F").resize((res, res), Image.Resampling.BILINEAR)
        got = make_dataset("digits", split="test", resolution=res)[0][0]
        assert torch.allclose(got, torch.from_numpy(np.array(ref)), atol=1e-5)


def test_hflip_returns_image_or_its_mirror_both_occur():
    ds = make_dataset("digits", split="test", hflip=True)
    ref = make_dataset("digits", split="test")
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        x = ds[3]
        if torch.equal(x, ref[3]):
            seen.add("orig")
        elif torch.equal(x, ref[3].flip(-1)):
            seen.add("flip")
        else:
            raise AssertionError("hflip produced something other than the image or its mirror")
    assert seen == {"orig", "flip"}


# --------------------------------------------------------------------------------------------
# Gaussian mixture
# --------------------------------------------------------------------------------------------
def test_gmm_dataset_matches_mixture_sampler_and_is_seeded():
    ds = make_dataset("gmm", num_samples=500, seed=3)
    assert len(ds) == 500 and ds[0].shape == (2,) and ds[0].dtype == torch.float32 and data_shape(ds) == (2,)
    ring = GaussianMixture.ring()
    assert torch.allclose(ds.mixture.means, ring.means) and torch.allclose(ds.mixture.stds, ring.stds)
    expected = ring.sample(500, generator=torch.Generator().manual_seed(3)).float()
    assert torch.equal(ds.data, expected)
    assert torch.equal(make_dataset("gmm", num_samples=500, seed=3).data, ds.data)
    assert not torch.equal(make_dataset("gmm", num_samples=500, seed=4).data, ds.data)
    test = make_dataset("gmm", split="test", num_samples=500, seed=3)
    assert not torch.allclose(test.data, ds.data)
    # samples are near their modes: distance to the nearest mean ~ std 0.1 in 2-D
    d = torch.cdist(ds.data.double(), ring.means).min(1).values
    assert 0.08 < float(d.pow(2).mean().div(2).sqrt()) < 0.12


def test_gmm_custom_spec_and_bad_fields():
    ds = make_dataset("gmm", gmm={"means": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], "stds": 0.5}, num_samples=10)
    assert ds[0].shape == (3,) and ds.mixture.dim == 3
    ds = make_dataset("gmm", gmm={"kind": "ring", "k": 4, "radius": 1.0}, num_samples=10)
    assert ds.mixture.means.shape == (4, 2)
    with pytest.raises(ValueError, match="radus"):
        make_dataset("gmm", gmm={"kind": "ring", "radus": 1.0})
    with pytest.raises(ValueError, match="resolution"):
        make_dataset("gmm", resolution=8)


# --------------------------------------------------------------------------------------------
# image folder
# --------------------------------------------------------------------------------------------
def _gradient_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """PNG and JPEG files of various sizes, in nested folders, plus a non-image file."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    _gradient_image(40, 30, 0).save(tmp_path / "img0.png")
    _gradient_image(17, 23, 1).save(tmp_path / "a" / "img1.JPG", quality=95)
    _gradient_image(64, 64, 2).convert("L").save(tmp_path / "a" / "b" / "img2.jpeg")
    Image.fromarray(np.full((10, 12, 4), 200, np.uint8), "RGBA").save(tmp_path / "a" / "img3.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_finds_images_recursively_any_size(image_dir: Path):
    ds = make_dataset("folder", root=str(image_dir), resolution=16)
    assert len(ds) == 4 and data_shape(ds) == (3, 16, 16)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    grey = make_dataset("folder", root=str(image_dir), resolution=8, channels=1)
    assert grey[0].shape == (1, 8, 8)
    # the RGBA file (constant 200) comes back as constant 200 / 127.5 - 1 in every channel
    idx = [Path(f).name for f in ds.files].index("img3.png")
    assert torch.allclose(ds[idx], torch.full((3, 16, 16), 200 / 127.5 - 1), atol=1e-6)


def test_folder_resize_and_center_crop_matches_pil(image_dir: Path):
    ds = make_dataset("folder", root=str(image_dir), resolution=10)
    idx = [Path(f).name for f in ds.files].index("img0.png")
    img = Image.open(image_dir / "img0.png").convert("RGB")  # 40 x 30 -> 13 x 10 -> crop columns 1..11
    ref = np.asarray(img.resize((13, 10), Image.Resampling.BICUBIC), dtype=np.float32)[:, 1:11]
    assert torch.allclose(ds[idx], torch.from_numpy(ref.transpose(2, 0, 1) / 127.5 - 1), atol=1e-6)
    # the crop is centred: a 1-pixel-wide bright column in the middle stays in the middle
    arr = np.zeros((20, 60), np.uint8)
    arr[:, 30] = 255
    out = np.asarray(resize_center_crop(Image.fromarray(arr), 20))
    assert out.shape == (20, 20) and abs(int(out.mean(0).argmax()) - 10) <= 1


def test_folder_hflip(image_dir: Path):
    plain = make_dataset("folder", root=str(image_dir), resolution=8)
    flip = make_dataset("folder", root=str(image_dir), resolution=8, hflip=True)
    torch.manual_seed(1)
    got = [flip[0] for _ in range(30)]
    assert any(torch.equal(g, plain[0]) for g in got) and any(torch.equal(g, plain[0].flip(-1)) for g in got)
    assert all(torch.equal(g, plain[0]) or torch.equal(g, plain[0].flip(-1)) for g in got)


def test_folder_corrupt_file_named_or_skipped(image_dir: Path):
    bad = image_dir / "a" / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(BadImageError, match="broken.png"):
        make_dataset("folder", root=str(image_dir), resolution=8)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = make_dataset("folder", root=str(image_dir), resolution=8, skip_bad=True)
    assert len(ds) == 4 and ds.skipped == 1 and ds.skipped_files == [str(bad)]


def test_folder_truncated_file_found_lazily(image_dir: Path):
    """A file with a valid PNG signature but truncated data passes the cheap check and fails at use."""
    good = (image_dir / "img0.png").read_bytes()
    (image_dir / "img0b.png").write_bytes(good[: len(good) // 3])
    ds = make_dataset("folder", root=str(image_dir), resolution=8)  # header check passes
    i = [Path(f).name for f in ds.files].index("img0b.png")
    with pytest.raises(BadImageError, match="img0b.png"):
        ds[i]
    with pytest.raises(BadImageError, match="img0b.png"):
        make_dataset("folder", root=str(image_dir), resolution=8, verify="full")
    ds = make_dataset("folder", root=str(image_dir), resolution=8, skip_bad=True)
    with pytest.warns(UserWarning, match="img0b.png"):
        x = ds[i]
    assert ds.skipped == 1
    assert torch.equal(x, ds[(i + 1) % len(ds)])  # deterministic replacement: the next file (wrapping)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(ds[i], x)  # remembered: no second warning, same replacement


def test_folder_empty_and_wrong_path(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        make_dataset("folder", root=str(tmp_path / "empty"), resolution=8)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        make_dataset("folder", root=str(tmp_path / "does-not-exist"), resolution=8)
    with pytest.raises(ValueError, match="root"):
        make_dataset("folder", resolution=8)
    Image.new("L", (8, 8)).save(tmp_path / "empty" / "one.png")
    with pytest.raises(ValueError, match="resolution"):  # None is inferred; a bad value is an error
        make_dataset("folder", root=str(tmp_path / "empty"), resolution=0)


def test_folder_holdout_split(image_dir: Path):
    tr = make_dataset("folder", root=str(image_dir), resolution=8, holdout=1)
    te = make_dataset("folder", root=str(image_dir), resolution=8, split="test", holdout=1)
    assert len(tr) == 3 and len(te) == 1 and not set(tr.files) & set(te.files)
    with pytest.raises(ValueError, match="holdout"):
        make_dataset("folder", root=str(image_dir), resolution=8, split="test")


# --------------------------------------------------------------------------------------------
# super-resolution pairs
# --------------------------------------------------------------------------------------------
def test_sr_pairs_consistent():
    ds = make_dataset("sr", resolution=16, sr_factor=4, split="test")
    item = ds[5]
    assert set(item) == {"x0", "cond", "lowres_small"} and set(item["cond"]) == {"lowres"}  # unlabelled: no labels
    hr, lr, small = item["x0"], item["cond"]["lowres"], item["lowres_small"]
    assert hr.shape == lr.shape == (1, 16, 16) and small.shape == (1, 4, 4) and data_shape(ds) == (1, 16, 16)
    # area downsampling by hand: mean of each 4x4 block
    assert torch.allclose(small, hr.reshape(1, 4, 4, 4, 4).mean((2, 4)), atol=1e-6)
    assert torch.allclose(lr, upsample(small, (16, 16), "bicubic")) and float(lr.abs().max()) <= 1.0
    near = make_dataset("sr", resolution=16, sr_factor=4, split="test", sr_upsample="nearest")[5]
    assert torch.allclose(F.avg_pool2d(near["cond"]["lowres"][None], 4)[0], small, atol=1e-6)  # nearest is exact
    x0, cond = split_batch(next(iter(torch.utils.data.DataLoader(ds, batch_size=4))))
    assert x0.shape == (4, 1, 16, 16) and set(cond) == {"lowres"} and cond["lowres"].shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        make_dataset("sr", sr_factor=3)


def test_sr_from_folder(image_dir: Path):
    ds = make_dataset("sr", root=str(image_dir), resolution=16, sr_factor=2)  # sr_base inferred: folder
    assert ds[0]["x0"].shape == (3, 16, 16) and ds[0]["lowres_small"].shape == (3, 8, 8)


# --------------------------------------------------------------------------------------------
# generic
# --------------------------------------------------------------------------------------------
def test_denormalize_and_bad_names():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])
    assert torch.equal(denormalize(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert set(DATASETS) == {"digits", "gmm", "folder", "sr"}
    with pytest.raises(ValueError, match="digits"):
        make_dataset("mnist")
    with pytest.raises(ValueError, match="root"):
        make_dataset("digits", root="/tmp")
    with pytest.raises(ValueError, match="split"):
        make_dataset("digits", split="val")
    assert len(make_dataset("digits", num_samples=10)) == 10


def test_folder_format_inferred_from_the_images(image_dir: Path):
    from etsdm.data import infer_format

    mixed = infer_format(image_dir)  # RGB, RGBA and one grayscale JPEG: colour
    assert mixed.channels == 3 and "1 of 4 inspected images are grayscale" in mixed.note
    assert make_dataset("folder", root=str(image_dir), resolution=8).shape == (3, 8, 8)
    gray = image_dir / "gray"
    gray.mkdir()
    for i, side in enumerate((20, 13, 30)):  # grayscale PNGs (mode L)
        Image.fromarray(np.full((side, side + 3), 40 * i, np.uint8), "L").save(gray / f"g{i}.png")
    fmt = infer_format(gray)
    assert (fmt.channels, fmt.resolution) == (1, 8)  # smallest shorter side 13 -> multiple of 8
    assert "channels=1 (3 of 3 inspected images are grayscale)" in fmt.note and "resolution=8" in fmt.note
    ds = make_dataset("folder", root=str(gray))
    assert data_shape(ds) == (1, 8, 8) and ds[0].shape == (1, 8, 8) and "inferred" in ds.inferred
    assert infer_format(gray, channels=3, resolution=16).note == ""  # nothing left to infer


# --------------------------------------------------------------------------------------------
# class labels (issue 10: items {"x0", "cond": {"labels"}}, split_batch)
# --------------------------------------------------------------------------------------------
def test_split_batch_of_tensors_and_dicts():
    x = torch.randn(3, 1, 8, 8)
    x0, cond = split_batch(x)
    assert x0 is x and cond == {}
    y = torch.tensor([1, 2, 3])
    item = {"x0": x, "cond": {"labels": y}, "extra": torch.zeros(3)}
    x0, cond = split_batch(item)
    assert x0 is x and cond == {"labels": y}  # extras outside cond never reach the network
    cond["lowres"] = x
    assert set(item["cond"]) == {"labels"}  # a copy: the item is not changed
    assert split_batch({"x0": x}) == (x, {})
    with pytest.raises(TypeError, match="x0"):
        split_batch({"image": x})


def test_digits_with_labels_carry_the_sklearn_digit():
    raw = load_digits()
    plain, lab = make_dataset("digits", split="test"), make_dataset("digits", split="test", labels=True)
    assert isinstance(plain[7], torch.Tensor)  # unlabelled items unchanged
    assert lab.num_classes == 10 and lab.class_names == [str(d) for d in range(10)]
    for i in (0, 7, 299):
        x0, cond = split_batch(lab[i])
        assert torch.equal(x0, plain[i]) and set(cond) == {"labels"}
        assert cond["labels"].dtype == torch.int64 and cond["labels"].shape == ()
        flat = torch.as_tensor(raw.images.reshape(len(raw.images), -1) / 8.0 - 1.0, dtype=torch.float32)
        j = int(torch.cdist(x0.reshape(1, -1), flat).argmin())
        assert int(cond["labels"]) == int(raw.target[j])  # the label of this very image in sklearn
    batch = next(iter(torch.utils.data.DataLoader(lab, batch_size=5)))
    x0, cond = split_batch(batch)
    assert x0.shape == (5, 1, 8, 8) and cond["labels"].shape == (5,) and torch.equal(cond["labels"], lab.labels[:5])
    assert stack_images(lab, 4).shape == (4, 1, 8, 8)


@pytest.fixture
def class_dir(tmp_path: Path) -> Path:
    """Classes "cat" (2 images, one nested deeper) and "dog" (1 image); images of distinct colours."""
    root = tmp_path / "classes"
    for rel, v in (("dog/d0.png", 10), ("cat/c0.png", 200), ("cat/deep/c1.png", 120)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), v, np.uint8), "L").save(root / rel)
    return root


def test_folder_labels_one_class_per_subfolder(class_dir: Path):
    ds = make_dataset("folder", root=str(class_dir), labels=True)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    by_value = {}
    for i in range(len(ds)):
        x0, cond = split_batch(ds[i])
        by_value[round(float(denormalize(x0).mean()) * 255)] = int(cond["labels"])
    assert by_value == {200: 0, 120: 0, 10: 1}  # cat/** -> 0 (nested too), dog -> 1
    assert torch.equal(ds.labels, torch.tensor([0, 0, 1]))
    assert isinstance(make_dataset("folder", root=str(class_dir))[0], torch.Tensor)  # labels off: tensors
    te = make_dataset("folder", root=str(class_dir), labels=True, holdout=1, split="test")
    assert te.class_names == ["cat", "dog"]  # classes from every file, not the split's


def test_folder_labels_clear_errors(class_dir: Path):
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(class_dir / "loose.png")
    with pytest.raises(ValueError, match=r"directly in it \(loose.png\)"):
        make_dataset("folder", root=str(class_dir), labels=True)
    (class_dir / "loose.png").unlink()
    for f in (class_dir / "dog").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="at least 2 class subfolders.*found 1 \\(cat\\)"):
        make_dataset("folder", root=str(class_dir), labels=True)
    with pytest.raises(ValueError, match="gmm data set has no class labels"):
        make_dataset("gmm", labels=True)


def test_sr_with_labels_puts_them_in_cond():
    ds = make_dataset("sr", resolution=16, sr_factor=4, split="test", labels=True)
    base = make_dataset("digits", resolution=16, split="test", labels=True)
    item = ds[3]
    assert set(item["cond"]) == {"lowres", "labels"} and int(item["cond"]["labels"]) == int(base.labels[3])
    assert torch.equal(item["x0"], base[3]["x0"]) and ds.num_classes == 10
