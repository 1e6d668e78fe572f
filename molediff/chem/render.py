"""Draw conformers as 3D ball-and-stick projections with matplotlib (CPK colours, bonds from the graph)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from rdkit import Chem

__all__ = ["CPK", "draw_conformer", "draw_grid"]

#: CPK / Jmol-like colours by element symbol (fallback: pink).
CPK = {"H": "#FFFFFF", "C": "#404040", "N": "#3050F8", "O": "#FF0D0D", "F": "#90E050", "Cl": "#1FF01F",
       "Br": "#A62929", "I": "#940094", "S": "#FFFF30", "P": "#FF8000", "B": "#FFB5B5", "Si": "#F0C8A0",
       "Na": "#AB5CF2", "K": "#8F40D4", "Li": "#CC80FF", "Mg": "#8AFF00", "Ca": "#3DFF00", "Fe": "#E06633"}
_RADIUS = {"H": 0.25}


def _view_rotation(xyz: np.ndarray) -> np.ndarray:
    """Rotate so the largest spread lies along x, the second along y (principal axes), z toward the viewer."""
    centred = xyz - xyz.mean(axis=0)
    if len(xyz) < 2:
        return centred
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rot = vt.T if vt.shape[0] == 3 else np.eye(3)
    if np.linalg.det(rot) < 0:  # keep a proper rotation: never show the mirror image
        rot[:, -1] *= -1
    return centred @ rot


def draw_conformer(ax, mol: Chem.Mol, conf_id: int = -1, *, title: str | None = None,
                   hydrogens: bool = True) -> None:
    """Draw one conformer on a matplotlib axes: depth-sorted atoms (shaded by depth) and bonds."""
    xyz = _view_rotation(mol.GetConformer(conf_id).GetPositions())
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    keep = [hydrogens or s != "H" for s in symbols]
    z = xyz[:, 2]
    zspan = max(np.ptp(z), 1e-6)
    items = []  # (depth, kind, payload): painter's algorithm
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        if keep[i] and keep[j]:
            items.append(((z[i] + z[j]) / 2 - 0.01, "bond", (i, j, b.GetBondTypeAsDouble())))
    for i, s in enumerate(symbols):
        if keep[i]:
            items.append((z[i], "atom", i))
    for depth, kind, payload in sorted(items, key=lambda t: t[0]):
        shade = 0.55 + 0.45 * (depth - z.min()) / zspan
        if kind == "bond":
            i, j, order = payload
            ax.plot(xyz[[i, j], 0], xyz[[i, j], 1], color=(0.35 * shade,) * 3, lw=1.5 + 1.2 * min(order, 3),
                    solid_capstyle="round", zorder=1 + depth)
        else:
            s = symbols[payload]
            r = _RADIUS.get(s, 0.38)
            ax.add_patch(_circle(xyz[payload, :2], r, CPK.get(s, "#FF1493"), shade, 2 + depth))
    pad = 0.8
    ax.set_xlim(xyz[:, 0].min() - pad, xyz[:, 0].max() + pad)
    ax.set_ylim(xyz[:, 1].min() - pad, xyz[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)


def _circle(center, radius, color, shade, zorder):
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Circle

    rgb = np.clip(np.array(to_rgb(color)) * shade, 0, 1)
    return Circle(center, radius, facecolor=rgb, edgecolor="black", lw=0.6, zorder=zorder)


def draw_grid(mols: Sequence[Chem.Mol], path: str, *, per_mol: int = 4, columns: int | None = None,
              hydrogens: bool = True, dpi: int = 150) -> int:
    """Draw up to ``per_mol`` conformers of each molecule in a grid and save a PNG. Returns panels drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False) if matplotlib.get_backend().lower() != "agg" else None
    import matplotlib.pyplot as plt

    panels = [(m, c.GetId(), k) for m in mols for k, c in enumerate(list(m.GetConformers())[:per_mol])]
    if not panels:
        raise ValueError("no conformers to draw")
    cols = columns or min(len(panels), max(per_mol, 1), 6)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (mol, cid, k) in zip(axes.ravel(), panels):
        name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
        draw_conformer(ax, mol, cid, title=f"{name} #{k + 1}".strip(), hydrogens=hydrogens)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return len(panels)
