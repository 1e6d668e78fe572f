"""Write QM9 splits as PackedGraphs files (optionally xz-compressed) for a machine without RDKit.

Example
-------
::

    python scripts/pack_qm9.py --out .carry/dev --valid-limit 1000 --xz
"""

from __future__ import annotations

import argparse
import lzma
import shutil
from pathlib import Path

import torch

from molediff.data.qm9 import load_qm9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for qm9_train.safetensors and qm9_valid*.safetensors")
    parser.add_argument("--valid-limit", type=int, default=None, help="keep the first N validation molecules")
    parser.add_argument("--xz", action="store_true", help="compress with xz (the train split: 415 MB -> 28 MB)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        store = load_qm9(split).to_packed()
        name = "qm9_train" if split == "train" else "qm9_valid"
        if split == "valid" and args.valid_limit is not None:
            store = store.subset(torch.arange(min(args.valid_limit, len(store))))
            name = f"qm9_valid{args.valid_limit // 1000}k" if args.valid_limit % 1000 == 0 else f"qm9_valid{args.valid_limit}"
        path = out / f"{name}.safetensors"
        store.save(path)
        if args.xz:
            with open(path, "rb") as src, lzma.open(f"{path}.xz", "wb", preset=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            path.unlink()
            path = Path(f"{path}.xz")
        print(f"{split}: {len(store)} molecules -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
