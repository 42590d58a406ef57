"""Tests of CIFAR-10 loading (archive, ImageFolder, torchvision folder), caching, subsets and the demo sample."""

import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import pytest
import torch
from PIL import Image

from aihwkit_nabn.tasks.cifar10 import data as cifar10
from aihwkit_nabn.utils import sources
from aihwkit_nabn.tasks.cifar10 import sample as demo_sample
from aihwkit_nabn.tasks.cifar10.data import CLASSES, load_cifar10, normalize, stratified_subset
from aihwkit_nabn.tasks.cifar10.dataset import TensorImageDataset, make_loader
from aihwkit_nabn.tasks.cifar10.sample import DEMO_SAMPLE_PATH, load_demo_sample

PER_CLASS = {"train": 3, "test": 2}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # lossless: decoded pixels must match exactly
    return buf.getvalue()


@pytest.fixture(scope="module")
def synthetic():
    """Random images per split: {split: (uint8 [N,3,32,32] in sorted-file order, labels)}."""
    rng = np.random.default_rng(0)
    out = {}
    for split, k in PER_CLASS.items():
        imgs = rng.integers(0, 256, size=(10 * k, 32, 32, 3), dtype=np.uint8)
        labels = np.repeat(np.arange(10), k)
        out[split] = (imgs, labels)
    return out


def _expected(synthetic, split):
    imgs, labels = synthetic[split]
    return torch.from_numpy(imgs).permute(0, 3, 1, 2), torch.from_numpy(labels).long()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, synthetic):
    """A tiny cifar10_jpg.tar.gz look-alike (PNG members, shuffled member order)."""
    path = tmp_path_factory.mktemp("arch") / "cifar10_tiny.tar.gz"
    members = []
    for split, (imgs, labels) in synthetic.items():
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            members.append((f"{split}/{CLASSES[lab]}/{i:04d}.png", _png(img)))
    members.reverse()  # the loader must sort, not rely on archive order
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _write_imagefolder(root: Path, imgs, labels):
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        d = root / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:04d}.png").write_bytes(_png(img))


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_from_archive(archive, synthetic, tmp_path, split):
    images, labels = load_cifar10(split, archive, cache_dir=tmp_path, progress=False)
    exp_x, exp_y = _expected(synthetic, split)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (10 * PER_CLASS[split], 3, 32, 32)
    assert torch.equal(images, exp_x) and torch.equal(labels, exp_y)


def test_load_from_imagefolder_with_and_without_split(tmp_path, synthetic):
    for split, (imgs, labels) in synthetic.items():
        _write_imagefolder(tmp_path / "withsplit" / split, imgs, labels)
    imgs, labels = synthetic["test"]
    _write_imagefolder(tmp_path / "flat", imgs, labels)
    for split in ("train", "test"):
        x, y = load_cifar10(split, tmp_path / "withsplit", use_cache=False, progress=False)
        exp_x, exp_y = _expected(synthetic, split)
        assert torch.equal(x, exp_x) and torch.equal(y, exp_y)
    x, y = load_cifar10("test", tmp_path / "flat", use_cache=False, progress=False)
    assert torch.equal(x, _expected(synthetic, "test")[0])


def test_imagefolder_rejects_unknown_class(tmp_path):
    (tmp_path / "test" / "zebra").mkdir(parents=True)
    (tmp_path / "test" / "zebra" / "0.png").write_bytes(_png(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(ValueError, match="zebra"):
        load_cifar10("test", tmp_path, use_cache=False, progress=False)


def test_load_from_torchvision_folder(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    x, y = load_cifar10("train", tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert x.shape == (20, 3, 32, 32) and y.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert torch.equal(x[4].flatten(), torch.from_numpy(batches["data_batch_2"][0][0]))
    x, y = load_cifar10("test", folder, use_cache=False)  # the batches folder itself also works
    assert x.shape == (4, 3, 32, 32) and y.tolist() == batches["test_batch"][1]


def test_cache_is_reused_without_decoding(archive, tmp_path, monkeypatch):
    first = load_cifar10("test", archive, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("cifar10_test_*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    blob = torch.load(files[0], weights_only=True)  # cache files are plain tensors
    assert torch.equal(blob["images"], first[0])

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although a cache file exists")

    monkeypatch.setattr(cifar10, "_decode", no_decode)
    second = load_cifar10("test", archive, cache_dir=tmp_path, progress=False)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path))  # env var selects the same cache
    load_cifar10("test", archive, progress=False)


def test_cache_key_changes_with_source_mtime(archive, tmp_path, monkeypatch):
    load_cifar10("test", archive, cache_dir=tmp_path, progress=False)
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls = []
    real = cifar10._decode
    monkeypatch.setattr(cifar10, "_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_cifar10("test", archive, cache_dir=tmp_path, progress=False)
    assert calls == [1]


def test_source_from_env_and_helpful_error(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_CIFAR10", str(archive))
    x, _ = load_cifar10("test", cache_dir=tmp_path, progress=False)
    assert len(x) == 20
    monkeypatch.delenv("AIHWKIT_NABN_CIFAR10")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10("test", cache_dir=tmp_path)
    msg = str(info.value)
    assert "cifar10_jpg.tar.gz" in msg and "source=" in msg and "AIHWKIT_NABN_CIFAR10" in msg
    with pytest.raises(ValueError):
        load_cifar10("val", archive)


def test_stratified_subset_is_balanced_and_deterministic():
    labels = torch.arange(10).repeat_interleave(50)[torch.randperm(500, generator=torch.Generator().manual_seed(3))]
    idx = stratified_subset(labels, 100, seed=0)
    assert idx.dtype == torch.int64 and len(idx) == 100 and len(set(idx.tolist())) == 100
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert torch.equal(idx, stratified_subset(labels, 100, seed=0))
    assert not torch.equal(idx, stratified_subset(labels, 100, seed=1))
    counts = torch.bincount(labels[stratified_subset(labels, 52, seed=0)], minlength=10)
    assert counts.max() - counts.min() == 1 and counts.sum() == 52
    with pytest.raises(ValueError):
        stratified_subset(labels, 501, seed=0)


def test_normalize_dataset_and_loader():
    x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(10)
    z = normalize(x)
    assert z.dtype == torch.float32 and z.shape == x.shape
    mean = torch.tensor(cifar10.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(cifar10.CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(z, (x.float() / 255 - mean) / std)
    ds = TensorImageDataset(x, y)
    img, lab = ds[3]
    assert img.shape == (3, 32, 32) and int(lab) == 3
    batches = list(make_loader(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), z)
    order1 = torch.cat([b[1] for b in make_loader(x, y, 4, shuffle=True, seed=5)])
    order2 = torch.cat([b[1] for b in make_loader(x, y, 4, shuffle=True, seed=5)])
    assert torch.equal(order1, order2)


def test_demo_sample_shapes_and_dtypes():
    assert DEMO_SAMPLE_PATH.is_file(), "run `python -m aihwkit_nabn.tasks.cifar10.sample make-demo-sample`"
    assert DEMO_SAMPLE_PATH.stat().st_size < 6_000_000
    sample = load_demo_sample()
    assert sample["test_images"].shape == (1000, 3, 32, 32) and sample["test_images"].dtype == torch.uint8
    assert sample["calib_images"].shape == (512, 3, 32, 32) and sample["calib_images"].dtype == torch.uint8
    assert sample["test_labels"].dtype == torch.int64 and sample["calib_labels"].dtype == torch.int64
    assert torch.bincount(sample["test_labels"], minlength=10).tolist() == [100] * 10
    counts = torch.bincount(sample["calib_labels"], minlength=10)
    assert counts.sum() == 512 and counts.max() - counts.min() <= 1
    meta = sample["meta"]
    assert meta["source_sha256"] == cifar10.ARCHIVE_SHA256
    assert len(meta["test_indices"]) == 1000 and len(meta["calib_indices"]) == 512


def test_make_demo_sample_on_synthetic_archive(archive, tmp_path):
    out = demo_sample.make_demo_sample(tmp_path / "s.pt", archive, n_test=10, n_calib=20, cache_dir=tmp_path)
    sample = load_demo_sample(out)
    assert sample["test_images"].shape == (10, 3, 32, 32) and sample["calib_labels"].shape == (20,)
    assert torch.bincount(sample["test_labels"], minlength=10).tolist() == [1] * 10


_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg.tar.gz"


@pytest.mark.skipif(not _ARCHIVE.is_file(), reason="shared CIFAR-10 archive not present")
def test_real_archive_test_split_matches_demo_sample():
    # Uses the default cache, so only the first run on a machine decodes (~5 s on 2 cores).
    x, y = load_cifar10("test", _ARCHIVE, progress=False)
    assert x.shape == (10000, 3, 32, 32) and torch.bincount(y).tolist() == [1000] * 10
    sample = load_demo_sample()
    idx = sample["meta"]["test_indices"]
    assert torch.equal(x[idx], sample["test_images"]) and torch.equal(y[idx], sample["test_labels"])
