"""Which code produced a result (code_commit), and the device-pack tools that carry data to the GPU."""

import importlib.util
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aihwkit_nabn.utils.provenance import code_commit

ROOT = Path(__file__).resolve().parents[1]


def test_code_commit_prefers_the_environment_and_else_asks_git(monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_COMMIT", "abc123")
    assert code_commit() == "abc123"
    monkeypatch.delenv("AIHWKIT_NABN_COMMIT")
    found = code_commit()
    assert found == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", found), found


def test_code_commit_calls_changed_code_dirty_but_not_changed_results(tmp_path, monkeypatch):
    monkeypatch.delenv("AIHWKIT_NABN_COMMIT", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode:
        pytest.skip("git not available")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "rows.csv").write_text("x\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp_path / "results" / "rows.csv").write_text("x\ny\n")
    assert code_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("a = 2\n")
    assert code_commit(tmp_path) == f"{head}-dirty"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "reproduce" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_thin_and_unpack_give_back_the_same_pixels(tmp_path):
    pack = _script("device_pack")
    rng = np.random.default_rng(0)
    source = tmp_path / "ds.tar.gz"
    pixels = {}
    with tarfile.open(source, "w:gz") as tar:
        for name in ("ds/train/a.png", "ds/val/b.png", "ds/test/c.png"):
            pixels[name] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels[name]).save(buf, "PNG")
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
        info = tarfile.TarInfo("ds/train.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"a\nb"))
    packed, thinned = tmp_path / "p.tar", tmp_path / "t.tar"
    pack.main(["pack", str(source), str(packed)])
    pack.main(["thin", str(packed), str(thinned), "--drop", "ds/val/"])
    pack.main(["unpack", str(thinned), str(tmp_path / "out")])
    for name, want in pixels.items():
        path = tmp_path / "out" / name
        assert path.exists() == ("/val/" not in name), name
        if path.exists():
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), want)
    assert (tmp_path / "out" / "ds" / "train.txt").read_bytes() == b"a\nb"
    with tarfile.open(thinned) as tar:
        manifest = json.loads(tar.extractfile(pack.MANIFEST).read())
    assert manifest["dropped"] == ["ds/val/"]
    with pytest.raises(SystemExit, match="--drop"):
        pack.main(["thin", str(packed), str(tmp_path / "x.tar")])


def test_thin_stubs_pennfudans_val_images_and_keeps_its_split(tmp_path):
    from aihwkit_nabn.tasks.pennfudan.data import split_names

    pack = _script("device_pack")
    rng = np.random.default_rng(1)
    names = [f"FudanPed{i:05d}" for i in range(1, 18)]
    source = tmp_path / "pf.tar.gz"
    with tarfile.open(source, "w:gz") as tar:
        for name in names:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)).save(buf, "PNG")
            info = tarfile.TarInfo(f"PennFudanPed/PNGImages/{name}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    packed, thinned = tmp_path / "p.tar", tmp_path / "t.tar"
    pack.main(["pack", str(source), str(packed)])
    pack.main(["thin", str(packed), str(thinned), "--stub-pennfudan-val"])
    pack.main(["unpack", str(thinned), str(tmp_path / "out")])
    val = set(split_names(names, "val"))
    assert val and len(list((tmp_path / "out" / "PennFudanPed" / "PNGImages").glob("*.png"))) == len(names)
    for name in names:
        size = Image.open(tmp_path / "out" / "PennFudanPed" / "PNGImages" / f"{name}.png").size
        assert (size == (1, 1)) == (name in val), name
