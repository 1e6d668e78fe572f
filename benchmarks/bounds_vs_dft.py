"""Where QM9's DFT bond (1-2) and angle (1-3) distances sit against RDKit's distance-geometry windows.

The stereo guidance keeps 1-2 and 1-3 distances inside RDKit's bounds (``GetMoleculeBoundsMatrix``, through
:func:`molediff.chem.validity.pair_bounds`); this measures how often the DFT geometries themselves lie outside
those windows and by how much, on seeded validation molecules (hydrogens included)::

    python benchmarks/bounds_vs_dft.py --num-mols 1000 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np

from molediff.chem.evaluation import select_molecules
from molediff.chem.validity import pair_bounds
from molediff.data.qm9 import load_qm9


def window_offsets(mols) -> dict[int, np.ndarray]:
    """Per topological distance (1, 2): ``[P, 3]`` rows of (DFT distance, lower, upper) in Å."""
    rows: dict[int, list[np.ndarray]] = {1: [], 2: []}
    for m in mols:
        pos = m.mol.GetConformer().GetPositions()
        iu, ju, lower, upper, hops = pair_bounds(m.mol)
        d = np.linalg.norm(pos[iu] - pos[ju], axis=1)
        for hop in rows:
            near = hops == hop
            rows[hop].append(np.stack([d[near], lower[near], upper[near]], axis=1))
    return {hop: np.concatenate(r) for hop, r in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-mols", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mols = select_molecules(load_qm9("valid"), args.num_mols, seed=args.seed)
    print(f"# bounds_vs_dft, {len(mols)} QM9 validation molecules, seed {args.seed}")
    print("| pairs | count | window width (median, Å) | DFT below | DFT above | outside by (median, Å) | "
          "outside by (90 %, Å) |")
    print("|---|---|---|---|---|---|---|")
    for hop, rows in window_offsets(mols).items():
        d, lower, upper = rows.T
        outside = np.maximum(lower - d, 0.0) + np.maximum(d - upper, 0.0)
        out = outside[outside > 0]
        print(f"| 1-{hop + 1} | {len(d)} | {np.median(upper - lower):.3f} | {np.mean(d < lower):.3f} | "
              f"{np.mean(d > upper):.3f} | {np.median(out) if len(out) else 0.0:.3f} | "
              f"{np.quantile(out, 0.9) if len(out) else 0.0:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
