"""etsdm.latent: autoencoder config, training, folders, Latents, the latent cache, LatentDataset."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel
from torch.utils.data import Subset

from etsdm.config import ConfigError, DataConfig, configs_dir, load_config, packaged_configs, to_dict
from etsdm.data import make_dataset
from etsdm.latent import (
    LatentDataset,
    LatentError,
    Latents,
    autoencoder_config,
    cached_latents,
    data_key,
    dataset_labels,
    fit_scaling_factor,
    is_autoencoder_config,
    latent_training_set,
    load_autoencoder_config,
    read_sidecar,
    reconstruction_error,
    resolve_autoencoder,
    train_autoencoder,
)
from etsdm.latent import autoencoder as autoencoder_module
from etsdm.latent import cache as cache_module
from etsdm.latent import resolve as resolve_module
from etsdm.latent.autoencoder import build_autoencoder, stack_x0
from etsdm.latent.folders import WEIGHTS_FILES

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "autoencoder": {"block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 2,
                    "mid_block_attention": False},
    "train": {"steps": 30, "batch_size": 16, "lr": 3e-3, "log_every": 1},
}
TINY_YAML = """# a tiny autoencoder for the tests
name: tiny
data: {name: digits}
autoencoder: {block_out_channels: [8, 16], norm_num_groups: 4, latent_channels: 2, mid_block_attention: false}
train: {steps: 5, batch_size: 16, lr: 3.0e-3}
"""


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return build_autoencoder(autoencoder_config(TINY).autoencoder, channels=1, resolution=8)


@pytest.fixture(scope="module")
def digits() -> Subset:
    return Subset(make_dataset("digits"), range(100))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny autoencoder trained 30 steps on digits (the run folder)."""
    return train_autoencoder(autoencoder_config(TINY), tmp_path_factory.mktemp("ae") / "run")


# --- config ------------------------------------------------------------------------------------
def test_is_autoencoder_config(tmp_path):
    (tmp_path / "ae.yaml").write_text(TINY_YAML)
    (tmp_path / "run.yaml").write_text("data: {name: digits}\n")
    (tmp_path / "list.yaml").write_text("- autoencoder\n")
    assert is_autoencoder_config(tmp_path / "ae.yaml")
    assert not is_autoencoder_config(tmp_path / "run.yaml")
    assert not is_autoencoder_config(tmp_path / "list.yaml")
    assert not is_autoencoder_config(tmp_path / "missing.yaml")
    assert not is_autoencoder_config(configs_dir() / "digits_etsdm.yaml")


@pytest.mark.parametrize("patch, field", [
    ({"autoencoder": {"block_out_channels": [10, 16]}}, "autoencoder.norm_num_groups"),
    ({"autoencoder": {"block_out_channels": []}}, "autoencoder.block_out_channels"),
    ({"autoencoder": {"latent_channels": 0}}, "autoencoder.latent_channels"),
    ({"autoencoder": {"reconstruction": "lpips"}}, "autoencoder.reconstruction"),
    ({"autoencoder": {"kl_wieght": 1.0}}, "autoencoder.kl_wieght"),
    ({"data": {"name": "gmm"}}, "data.name"),
    ({"data": {"hflip": True}}, "data.hflip"),
    ({"train": {"lr": 0}}, "train.lr"),
])
def test_config_errors_name_the_field(patch, field):
    data = {**TINY, **{k: {**TINY[k], **v} for k, v in patch.items()}}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        autoencoder_config(data)


def test_load_error_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("autoencoder: {latent_channels: -1}\n")
    with pytest.raises(ConfigError, match=rf"{p}.*autoencoder\.latent_channels"):
        load_autoencoder_config(p)


def test_overrides_name_unknown_fields(tmp_path):
    p = tmp_path / "ae.yaml"
    p.write_text(TINY_YAML)
    cfg = load_autoencoder_config(p, ["train.steps=7", "autoencoder.block_out_channels=[16, 32]"])
    assert cfg.train.steps == 7 and cfg.autoencoder.block_out_channels == [16, 32]
    with pytest.raises(ConfigError, match=r"unknown field train\.stepz; allowed: steps"):
        load_autoencoder_config(p, ["train.stepz=7"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_autoencoder_config(p, ["train.steps"])


def test_packaged_ae_digits_is_the_repository_config():
    packaged, repo = packaged_configs() / "ae_digits.yaml", configs_dir() / "ae_digits.yaml"
    assert packaged.read_bytes() == repo.read_bytes()
    cfg = load_autoencoder_config(packaged)
    assert is_autoencoder_config(repo) and cfg.data.name == "digits" and cfg.autoencoder.kl_weight == 1e-6


# --- training ----------------------------------------------------------------------------------
def test_training_lowers_the_reconstruction_loss_and_writes_a_diffusers_folder(trained):
    rec = [m["rec"] for m in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines())]
    assert len(rec) == 30
    assert sum(rec[-5:]) < 0.6 * sum(rec[:5])  # seeded: 120 vs 228
    vae = AutoencoderKL.from_pretrained(trained, local_files_only=True)  # plain diffusers loads it
    side = read_sidecar(trained)
    assert side["config"] == to_dict(autoencoder_config(TINY))
    assert vae.config.scaling_factor == pytest.approx(side["scaling_factor"])
    assert side["latent_shape"] == [2, 4, 4] and (trained / "reconstructions.png").is_file()
    assert not list(trained.parent.glob(".*tmp*"))


def test_trained_beats_untrained_on_held_out_digits(trained):
    images = stack_x0([make_dataset("digits", split="test")[i] for i in range(100)])
    untrained = reconstruction_error(Latents(tiny_vae(), 1.0), images)
    assert reconstruction_error(Latents.load(trained), images)["mse"] < 0.5 * untrained["mse"]


def test_train_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(tmp_path / "run")):
        train_autoencoder(autoencoder_config({**TINY, "train": {"steps": 1}}), tmp_path / "run")


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill during the write

    monkeypatch.setattr(autoencoder_module, "sample_grid", crash)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(autoencoder_config({**TINY, "train": {"steps": 1}}), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


# --- Latents -----------------------------------------------------------------------------------
def test_encode_decode_shapes_ranges_and_scaling(digits):
    vae = tiny_vae()
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(100.0)  # so that decoded images leave [-1, 1] before the clamp
    lat = Latents(vae, 2.0)
    x = stack_x0([digits[i] for i in range(10)])
    assert lat.latent_shape((1, 8, 8)) == (2, 4, 4)
    z0 = lat.encode_unscaled(x)
    assert z0.shape == (10, 2, 4, 4) and torch.equal(lat.encode(x), 2.0 * z0)
    z = torch.randn(10, 2, 4, 4)
    raw = vae.decode(z / 2.0).sample
    images = lat.decode(z)
    assert raw.abs().max() > 1.5 and images.shape == (10, 1, 8, 8)
    assert torch.equal(images, raw.clamp(-1, 1))
    other = lat.with_scaling_factor(0.5)  # the factor cancels between encode and decode
    torch.testing.assert_close(other.decode(other.encode(x)), lat.decode(lat.encode(x)))


def test_shape_and_input_errors():
    lat = Latents(tiny_vae(), 1.0)
    with pytest.raises(LatentError, match="divisible"):
        lat.latent_shape((1, 7, 8))
    with pytest.raises(LatentError, match=r"\(1, 8, 8\)|\(1, H, W\)"):
        lat.latent_shape((3, 8, 8))
    with pytest.raises(LatentError, match="encode"):
        lat.encode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(LatentError, match="decode"):
        lat.decode(torch.zeros(2, 4, 4, 4))


def test_scaling_factor_fit_and_unknown():
    z = 3.0 * torch.randn(50, 2, 4, 4)
    assert fit_scaling_factor(z) == pytest.approx(1.0 / z.double().std().item(), rel=1e-12)
    with pytest.raises(LatentError, match="std"):
        fit_scaling_factor(torch.ones(4, 2))
    lat = Latents(tiny_vae())
    with pytest.raises(LatentError, match="scaling factor is not known"):
        lat.encode(torch.zeros(1, 1, 8, 8))
    assert lat.fitted(z).scaling_factor == fit_scaling_factor(z)
    assert Latents(tiny_vae(), 0.25).fitted(z).scaling_factor == 0.25  # a known factor is kept


def test_diffusers_folder_scaling_factor(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "explicit")  # diffusers writes its config's scaling_factor
    AutoencoderKL.from_pretrained(tmp_path / "explicit").save_pretrained(tmp_path / "none")
    cfg = json.loads((tmp_path / "explicit" / "config.json").read_text())
    vae = tiny_vae()
    vae.register_to_config(scaling_factor=0.37)
    vae.save_pretrained(tmp_path / "set")
    assert Latents.load(tmp_path / "set").scaling_factor == pytest.approx(0.37)
    assert Latents.load(tmp_path / "set", scaling_factor=1.5).scaling_factor == 1.5
    assert Latents.load(tmp_path / "explicit").scaling_factor == pytest.approx(cfg["scaling_factor"])
    del cfg["scaling_factor"]  # an older config.json without the key: fit it (LDM)
    (tmp_path / "none" / "config.json").write_text(json.dumps(cfg))
    assert not Latents.load(tmp_path / "none").has_scaling_factor


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        Latents.load(tmp_path / "missing")
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                norm_num_groups=4).save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'unet'}.*not a diffusers AutoencoderKL.*UNet2DModel"):
        Latents.load(tmp_path / "unet")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'noweights'}.*no weights"):
        Latents.load(tmp_path / "noweights")


def test_pipeline_folder_resolves_to_its_vae(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "sd" / "vae")
    (tmp_path / "sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert resolve_autoencoder(str(tmp_path / "sd")) == tmp_path / "sd" / "vae"


def test_save_copies_the_autoencoder_with_its_factor(trained, tmp_path):
    lat = Latents.load(trained).with_scaling_factor(0.8)
    out = lat.save(tmp_path / "run" / "autoencoder")
    back = Latents.load(out)
    assert back.scaling_factor == pytest.approx(0.8) and back.fingerprint() == lat.fingerprint()
    assert read_sidecar(out) == read_sidecar(trained)
    assert Latents.load(trained).scaling_factor == pytest.approx(read_sidecar(trained)["scaling_factor"])
    with pytest.raises(LatentError):
        Latents(tiny_vae()).save(tmp_path / "unknown")


# --- the latent cache --------------------------------------------------------------------------
def count_encodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = Latents.encode_unscaled

    def counted(self, images, **kw):
        calls.append(images.shape[0])
        return original(self, images, **kw)

    monkeypatch.setattr(Latents, "encode_unscaled", counted)
    return calls


def test_cached_latents_equal_fresh_encodings_and_are_reused(digits, tmp_path, monkeypatch):
    lat = Latents(tiny_vae())
    calls = count_encodes(monkeypatch)
    z = cached_latents(lat, digits, key="digits-100", cache_dir=tmp_path, batch=32, shard_items=30)
    assert sum(calls) == 100
    images = stack_x0([digits[i] for i in range(100)])
    assert torch.equal(z, torch.cat([lat.encode_unscaled(images[i : i + 32]) for i in range(0, 100, 32)]))
    (entry,) = tmp_path.iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    assert (meta["count"], meta["shape"], meta["weights_sha256"]) == (100, [2, 4, 4], lat.fingerprint())
    assert [s["count"] for s in meta["shards"]] == [30, 30, 30, 10]
    calls.clear()
    again = cached_latents(Latents(tiny_vae()), digits, key="digits-100", cache_dir=tmp_path)  # same weights
    assert calls == [] and torch.equal(again, z)


def test_cache_invalidated_by_weights_key_and_count(digits, tmp_path, monkeypatch):
    vae = tiny_vae()
    z = cached_latents(Latents(vae), digits, key="k", cache_dir=tmp_path)
    calls = count_encodes(monkeypatch)
    with torch.no_grad():
        next(vae.parameters()).add_(1e-3)
    changed = cached_latents(Latents(vae), digits, key="k", cache_dir=tmp_path)
    assert sum(calls) == 100 and not torch.equal(changed, z)
    assert len(list(tmp_path.iterdir())) == 2  # the old entry is left for the runs that use it
    calls.clear()
    cached_latents(Latents(vae), digits, key="other", cache_dir=tmp_path)
    assert sum(calls) == 100
    calls.clear()
    fewer = cached_latents(Latents(vae), Subset(digits, range(40)), key="other", cache_dir=tmp_path)
    assert sum(calls) == 40 and fewer.shape[0] == 40 and len(list(tmp_path.iterdir())) == 3  # replaced


def test_a_damaged_entry_is_encoded_again(digits, tmp_path, monkeypatch):
    lat = Latents(tiny_vae())
    z = cached_latents(lat, digits, key="k", cache_dir=tmp_path, shard_items=50)
    (entry,) = tmp_path.iterdir()
    shard = entry / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    calls = count_encodes(monkeypatch)
    assert torch.equal(cached_latents(lat, digits, key="k", cache_dir=tmp_path), z) and sum(calls) == 100


def test_a_failed_cache_write_leaves_no_entry(digits, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        cached_latents(Latents(tiny_vae()), digits, key="k", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_refuses_random_flips_and_empty_keys(tmp_path):
    flipped = make_dataset("digits", hflip=True)
    with pytest.raises(ValueError, match="hflip"):
        cached_latents(Latents(tiny_vae()), flipped, key="k", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="key"):
        cached_latents(Latents(tiny_vae()), make_dataset("digits"), key="", cache_dir=tmp_path)


def test_cache_dir_default_follows_etsdm_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("ETSDM_CACHE", str(tmp_path))
    cached_latents(Latents(tiny_vae()), Subset(digits, range(4)), key="k")
    assert len(list((tmp_path / "latents").iterdir())) == 1


def test_cache_accepts_dict_items(tmp_path):
    labelled = [{"x0": make_dataset("digits")[i], "cond": {"labels": torch.tensor(i)}} for i in range(5)]
    lat = Latents(tiny_vae())
    z = cached_latents(lat, labelled, key="dicts", cache_dir=tmp_path)
    assert torch.equal(z, lat.encode_unscaled(torch.stack([d["x0"] for d in labelled])))


def test_latent_training_set_fits_the_factor_and_keeps_labels(digits, tmp_path):
    lat, ds = latent_training_set(Latents(tiny_vae()), digits, key="k", cache_dir=tmp_path, labels=True)
    unscaled = cached_latents(lat, digits, key="k", cache_dir=tmp_path)
    assert lat.scaling_factor == fit_scaling_factor(unscaled)
    assert ds.latents.std().item() == pytest.approx(1.0, rel=1e-5)  # LDM: unit-variance latents
    item = ds[7]
    assert torch.equal(item["x0"], lat.scale(unscaled[7]))
    assert int(item["cond"]["labels"]) == int(make_dataset("digits").labels[7])
    assert ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    known, plain = latent_training_set(Latents(tiny_vae(), 0.5), digits, key="k", cache_dir=tmp_path)
    assert known.scaling_factor == 0.5 and isinstance(plain[0], torch.Tensor)


def test_data_key_and_labels(tmp_path):
    base = data_key(DataConfig(), "train")
    assert base.startswith("digits-train-") and base == data_key(DataConfig(hflip=True, num_workers=4), "train")
    assert len({base, data_key(DataConfig(), "test"), data_key(DataConfig(resolution=16), "train")}) == 3
    root = tmp_path / "imgs"
    root.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(root / f"{i}.png")
    cfg = DataConfig(name="folder", root=str(root))
    key = data_key(cfg, "train", make_dataset("folder", root=str(root)))
    Image.new("L", (8, 8), color=255).save(root / "1.png")  # an edited image: a new key
    assert data_key(cfg, "train", make_dataset("folder", root=str(root))) != key
    digits = make_dataset("digits")
    assert torch.equal(dataset_labels(Subset(digits, [3, 1])), digits.labels[[3, 1]])
    assert torch.equal(dataset_labels([{"x0": torch.zeros(1), "cond": {"labels": torch.tensor(4)}}]),
                       torch.tensor([4]))
    with pytest.raises(ValueError, match="no labels"):
        dataset_labels([torch.zeros(1)])


# --- resolve_autoencoder ----------------------------------------------------------------------
def test_resolve_run_and_diffusers_folders(trained, tmp_path):
    assert resolve_autoencoder(str(trained)) == trained
    assert resolve_autoencoder(trained.name, base_dir=trained.parent) == trained
    tiny_vae().save_pretrained(tmp_path / "vae")
    assert resolve_autoencoder("vae", tmp_path) == tmp_path / "vae"
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope'}.*relative to {tmp_path}"):
        resolve_autoencoder("nope", tmp_path)
    (tmp_path / "run.yaml").write_text("data: {name: digits}\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'run.yaml'}.*not an autoencoder YAML"):
        resolve_autoencoder("run.yaml", tmp_path)


def test_resolve_yaml_trains_once_into_the_cache(tmp_path, monkeypatch):
    (tmp_path / "ae.yaml").write_text(TINY_YAML)
    folder = resolve_autoencoder("ae.yaml", tmp_path, cache_dir=tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" / "autoencoders" and folder.name.startswith("tiny-")
    assert read_sidecar(folder)["config"] == to_dict(load_autoencoder_config(tmp_path / "ae.yaml"))
    calls: list[Path] = []
    monkeypatch.setattr(resolve_module, "train_autoencoder", lambda *a, **k: calls.append(a[1]))
    (tmp_path / "same.yaml").write_text(  # reordered, commented, defaults spelled out: the same config
        "train: {steps: 5, batch_size: 16, lr: 0.003, seed: 0}  # same\n"
        "autoencoder: {latent_channels: 2, block_out_channels: [8, 16], norm_num_groups: 4, layers_per_block: 1,\n"
        "              mid_block_attention: false}\n"
        "data: {name: digits, hflip: false}\nname: tiny\n")
    assert resolve_autoencoder("same.yaml", tmp_path, cache_dir=tmp_path / "cache") == folder
    assert resolve_autoencoder(str(tmp_path / "ae.yaml"), cache_dir=tmp_path / "cache") == folder
    assert calls == []
    (tmp_path / "other.yaml").write_text(TINY_YAML.replace("steps: 5", "steps: 6"))
    other = resolve_module.trained_folder(tmp_path / "other.yaml", tmp_path / "cache")
    assert other != folder and other.name.startswith("tiny-")


def test_a_folder_autoencoder_retrains_when_its_images_change(tmp_path, monkeypatch):
    """The cache key of an autoencoder YAML sees the images under data.root: an edited, added or
    removed image trains a new autoencoder; an unchanged folder (or a non-image file) reuses it."""
    from PIL import Image

    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(root / f"{i}.png")
    (tmp_path / "ae.yaml").write_text(TINY_YAML.replace("{name: digits}", f"{{name: folder, root: {root}}}"))
    trained: list[Path] = []

    def fake_train(path, out, **kw):  # an AutoencoderKL folder as far as resolve can tell
        trained.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
        (out / WEIGHTS_FILES[0]).write_bytes(b"")

    monkeypatch.setattr(resolve_module, "train_autoencoder", fake_train)
    cache = tmp_path / "cache"

    def resolved() -> Path:
        return resolve_autoencoder("ae.yaml", tmp_path, cache_dir=cache)

    first = resolved()
    (root / "notes.txt").write_text("not an image")
    assert resolved() == first and trained == [first]  # unchanged images: the same key, no training
    noise = torch.randint(0, 256, (8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy()
    Image.fromarray(noise).save(root / "1.png")  # an edited image
    edited = resolved()
    Image.new("L", (8, 8)).save(root / "sub" / "3.png")  # an added one
    added = resolved()
    (root / "0.png").unlink()  # a removed one
    removed = resolved()
    assert len({first, edited, added, removed}) == 4 and trained == [first, edited, added, removed]
    assert resolved() == removed and len(trained) == 4
    assert all(p.name.startswith("tiny-") for p in trained)


def test_concurrent_resolvers_train_once(tmp_path, monkeypatch):
    (tmp_path / "ae.yaml").write_text(TINY_YAML)
    trained: list[Path] = []

    def counted(path, out, **kw):
        trained.append(out)
        return train_autoencoder(path, out, **kw)

    monkeypatch.setattr(resolve_module, "train_autoencoder", counted)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: resolve_autoencoder("ae.yaml", tmp_path, cache_dir=tmp_path / "c"), [0, 1]))
    assert folders[0] == folders[1] and len(trained) == 1
    assert sorted(p.name for p in folders[0].parent.iterdir()) == sorted([folders[0].name, f".{folders[0].name}.lock"])


# --- LatentDataset -----------------------------------------------------------------------------
def test_latent_dataset_items():
    z = torch.randn(6, 2, 4, 4)
    plain = LatentDataset(z)
    assert len(plain) == 6 and plain.shape == (2, 4, 4) and torch.equal(plain[2], z[2])
    assert not hasattr(plain, "num_classes")
    labelled = LatentDataset(z, torch.tensor([0, 1, 2, 0, 1, 2]))
    item = labelled[4]
    assert torch.equal(item["x0"], z[4]) and item["cond"]["labels"].dtype == torch.int64
    assert item["cond"]["labels"].shape == () and int(item["cond"]["labels"]) == 1
    assert labelled.num_classes == 3 and labelled.class_names == ["0", "1", "2"]
    assert LatentDataset(z, torch.zeros(6), class_names=list("abc")).num_classes == 3
    with pytest.raises(ValueError, match="labels"):
        LatentDataset(z, torch.zeros(5))
    with pytest.raises(ValueError, match="class_names"):
        LatentDataset(z, torch.full((6,), 3), class_names=list("abc"))


# --- the paper's LDM configs -------------------------------------------------------------------
@pytest.mark.parametrize("arm", ["baseline", "etsdm"])
def test_paper_ldm_configs(arm):
    cfg = load_config(configs_dir() / "paper" / "ldm" / f"ldm_ffhq_{arm}.yaml")
    betas = cfg.build_schedule().betas()
    assert cfg.schedule.name == "quadratic" and len(betas) == 1000
    ldm = torch.linspace(math.sqrt(0.0015), math.sqrt(0.0195), 1000, dtype=torch.float64) ** 2  # LDM's table
    torch.testing.assert_close(betas, ldm, rtol=1e-12, atol=0)
    assert cfg.latent.autoencoder is not None
    c = cfg.diffusion.condition
    assert (c.kind, c.n) == (("etsdm", 20) if arm == "etsdm" else ("identity", c.n))
