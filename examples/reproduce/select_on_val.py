"""Choose among trained candidates by their validation score only; copy the chosen checkpoint.

Usage: python examples/reproduce/select_on_val.py --key val_miou --out runs/camvid/chosen.pt runs/camvid/train/*.pt

Reads each checkpoint's meta (``key``: the final model's validation score), writes ``<out>.selection.json``
with every candidate's validation score, epochs and settings -- no test number: the test split is read for the
chosen model only, where it is reported -- and copies the best to ``--out``. Ties go to the first given.
"""

import argparse
import json
import shutil
from pathlib import Path

import aihwkit_nabn as nb


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--key", required=True, help="the meta key of the validation score (higher is better)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args(argv)
    candidates = []
    for path in args.checkpoints:
        if not path.is_file():
            print(f"skipped {path}: not there (unfinished?)")
            continue
        _, meta = nb.load_checkpoint(path)
        candidates.append({"checkpoint": str(path), args.key: meta[args.key], "arch": meta.get("arch"),
                           "epochs": len(meta.get("history", [])), "hparams": meta.get("hparams"),
                           "model_kwargs": meta.get("model_kwargs"), "seed": meta.get("seed")})
    if not candidates:
        raise SystemExit("no candidate checkpoint exists")
    best = max(candidates, key=lambda c: c[args.key])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best["checkpoint"], args.out)
    record = {"key": args.key, "chosen": best["checkpoint"], "candidates": candidates}
    Path(str(args.out) + ".selection.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    for c in candidates:
        print(f"{'*' if c is best else ' '} {c['checkpoint']}: {args.key} {c[args.key]:.2f}")


if __name__ == "__main__":
    main()
