"""Pack a dataset archive for the GPU machine losslessly smaller, and unpack it there to the original layout.

The device takes 64 MiB of carried files per call, with the aihwkit wheel among them; Penn-Fudan's PNG
archive (53.6 MB) does not fit beside the wheel. ``pack`` re-encodes every RGB PNG as lossless WebP (about
35 % smaller; each image is decoded again and checked pixel for pixel against the PNG) and keeps every
other file as it is, in an uncompressed tar with a manifest (the source's sha256). ``unpack`` writes the
original folder layout back with PNG images of the same pixels, which the task's loader reads as a folder
(``--data DEST``). Nothing of the data goes into the repository: the pack lives in the ignored ``.gpucarry/``.

    python examples/reproduce/device_pack.py pack ../shared/data/pennfudan.tar.gz .gpucarry/pennfudan.pack.tar
    python examples/reproduce/device_pack.py unpack .gpucarry/pennfudan.pack.tar /tmp/data/pennfudan
    python examples/reproduce/device_pack.py check ../shared/data/pennfudan.tar.gz /tmp/data/pennfudan
    python examples/reproduce/device_pack.py thin .gpucarry/camvid.pack.tar .gpucarry/camvid_notval.pack.tar \
        --drop camvid/val/ --drop camvid/valannot/     (the comparison stage never reads val)
    python examples/reproduce/device_pack.py thin .gpucarry/pennfudan.pack.tar .gpucarry/pennfudan_notval.pack.tar \
        --stub-pennfudan-val                            (the same for Penn-Fudan, whose split needs every name)

``check`` loads every split with the task's own loader from the archive and from the unpacked folder and
compares the tensors (images, labels or boxes) for equality.
"""

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

SUFFIX = ".webp"
MANIFEST = "device_pack.json"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(source: Path, out: Path) -> None:
    """Write ``out``: ``source``'s files with RGB PNGs as lossless WebP (checked), plus the manifest."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    converted = kept = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(source, "r:*") as src, tarfile.open(partial, "w") as dst:
        for member in src:
            if not member.isfile():
                continue
            data = src.extractfile(member).read()
            if member.name.lower().endswith(".png"):
                image = Image.open(io.BytesIO(data))
                if image.mode == "RGB":
                    buffer = io.BytesIO()
                    image.save(buffer, "WEBP", lossless=True, quality=100, method=4)
                    again = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
                    if not np.array_equal(again, np.asarray(image)):
                        sys.exit(f"{member.name}: the WebP copy is not pixel-identical; not packing")
                    _add(dst, member.name + SUFFIX, buffer.getvalue())
                    converted += 1
                    continue
            _add(dst, member.name, data)
            kept += 1
        manifest = {"source": source.name, "source_sha256": digest, "webp_images": converted, "files_kept": kept}
        _add(dst, MANIFEST, json.dumps(manifest, indent=1).encode())
    partial.replace(out)
    print(f"{out}: {converted} images as lossless WebP, {kept} files kept; {out.stat().st_size / 1e6:.1f} MB "
          f"(source {source.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]})")


def pennfudan_val_images(pack_path: Path) -> List[str]:
    """The member names of Penn-Fudan's val images in a pack (the task's own seeded split rule)."""
    from aihwkit_nabn.tasks.pennfudan.data import split_names

    with tarfile.open(pack_path, "r") as src:
        names = [m.name for m in src if m.name.startswith("PennFudanPed/PNGImages/")]
    stems = [Path(n).name.split(".")[0] for n in names]
    val = set(split_names(stems, "val"))
    return sorted(n for n, stem in zip(names, stems) if stem in val)


def _stub_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def thin(pack_path: Path, out: Path, drop: List[str], stub_pennfudan_val: bool = False) -> None:
    """Write ``out``: ``pack_path`` without the members under the ``drop`` prefixes (e.g. CamVid's val split,
    which the comparison never reads), the manifest saying what was dropped.

    ``stub_pennfudan_val``: Penn-Fudan's split is computed from the list of image names, so its val images
    cannot be dropped; they are replaced by 1x1 stand-ins instead (the names, hence the split, stay the same;
    reading the val split from such a copy fails on the mask size check, loudly)."""
    stubs = set(pennfudan_val_images(pack_path)) if stub_pennfudan_val else set()
    if not drop and not stubs:
        sys.exit("thin: name what to drop with --drop PREFIX (or --stub-pennfudan-val)")
    dropped = kept = 0
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(pack_path, "r") as src, tarfile.open(partial, "w") as dst:
        for member in src:
            if not member.isfile():
                continue
            data = src.extractfile(member).read()
            if member.name == MANIFEST:
                manifest = dict(json.loads(data), dropped=sorted(drop), stubbed=sorted(stubs))
                continue
            if any(member.name.startswith(prefix) for prefix in drop):
                dropped += 1
                continue
            if member.name in stubs:
                data = _stub_image()
                dropped += 1
            _add(dst, member.name, data)
            kept += 1
        _add(dst, MANIFEST, json.dumps(manifest, indent=1).encode())
    partial.replace(out)
    print(f"{out}: {kept} files kept, {dropped} dropped or stubbed ({', '.join(drop) or 'Penn-Fudan val images'}); "
          f"{out.stat().st_size / 1e6:.1f} MB")


def unpack(pack_path: Path, dest: Path) -> None:
    """Write the original layout under ``dest`` (WebP back to PNG, same pixels); print the manifest."""
    count = 0
    with tarfile.open(pack_path, "r") as src:
        for member in src:
            if not member.isfile():
                continue
            data = src.extractfile(member).read()
            if member.name == MANIFEST:
                print("manifest:", data.decode().replace("\n", ""))
                continue
            target = dest / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.name.endswith(".png" + SUFFIX):
                Image.open(io.BytesIO(data)).convert("RGB").save(target.with_suffix(""), "PNG", compress_level=1)
                count += 1
            else:
                target.write_bytes(data)
    print(f"{dest}: {count} images written back as PNG")


def check(source: Path, dest: Path) -> None:
    """Print, per split, whether the task's loader reads identical tensors from ``source`` and ``dest``."""
    import torch

    from aihwkit_nabn.tasks.camvid import load_camvid
    from aihwkit_nabn.tasks.pennfudan import load_pennfudan

    load = load_pennfudan if "pennfudan" in source.name else load_camvid
    same_all = True
    for split in ("train", "val", "test"):
        a, b = load(split, source, progress=False), load(split, dest, progress=False)
        same = all(len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a[:2], b[:2]))
        same_all &= same
        print(f"{source.name} {split}: {len(a[0])} images, identical tensors from the unpacked copy: {same}")
    if not same_all:
        sys.exit("the unpacked copy differs")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("pack", "thin", "unpack", "check"))
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--drop", action="append", default=[], help="thin: a member prefix to leave out (repeat)")
    parser.add_argument("--stub-pennfudan-val", action="store_true",
                        help="thin: replace Penn-Fudan's val images by 1x1 stand-ins (the split stays the same)")
    args = parser.parse_args(argv)
    if args.action == "thin":
        thin(args.source, args.dest, args.drop, args.stub_pennfudan_val)
    else:
        {"pack": pack, "unpack": unpack, "check": check}[args.action](args.source, args.dest)


if __name__ == "__main__":
    main()
