"""``molediff view``: draw the conformers of an SDF file as a PNG grid.

    molediff view out.sdf -o out.png --per-mol 4 --max-mols 6

Records in a row with the same title, atoms and bonds are conformers of one molecule.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdkit import Chem

__all__ = ["add_arguments", "run", "read_conformer_groups"]


def _positive(text: str) -> int:
    """Parse a count of at least 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _identity(mol: "Chem.Mol") -> tuple:
    """Title, elements, charges and bonds: what conformers of one molecule share (isomers do not)."""
    title = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    atoms = tuple((a.GetAtomicNum(), a.GetFormalCharge(), a.GetIsotope()) for a in mol.GetAtoms())
    bonds = tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), str(b.GetBondType())) for b in mol.GetBonds()))
    return title, atoms, bonds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``molediff view``."""
    parser.add_argument("sdf", help="SDF file written by `molediff conformers` (or any 3D SDF)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--per-mol", type=_positive, default=4, help="conformers per molecule (default 4)")
    parser.add_argument("--max-mols", type=_positive, default=6, help="molecules to draw (default 6)")
    parser.add_argument("--no-hydrogens", action="store_true", help="hide hydrogens")
    parser.add_argument("--dpi", type=int, default=150)


def read_conformer_groups(path: str, max_mols: int):
    """Group consecutive SDF records with the same title, atoms and bonds into multi-conformer molecules.

    Records RDKit cannot read (e.g. ``nan`` coordinates) and records without coordinates are skipped with a
    ``UserWarning`` that counts them.
    """
    import warnings

    from rdkit import Chem, rdBase

    groups: list = []
    skipped = 0
    with rdBase.BlockLogs():
        for mol in Chem.ForwardSDMolSupplier(path, removeHs=False, sanitize=False):
            if mol is None or mol.GetNumConformers() == 0:
                skipped += 1
                continue
            key = _identity(mol)
            if groups and groups[-1][0] == key:
                groups[-1][1].AddConformer(mol.GetConformer(), assignId=True)
            elif len(groups) < max_mols:
                groups.append((key, Chem.Mol(mol)))
            else:
                break
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} record(s) RDKit could not read or without coordinates",
                      UserWarning, stacklevel=2)
    return [m for _, m in groups]


def run(args: argparse.Namespace) -> int:
    """Run ``molediff view``; returns the exit status."""
    from molediff.chem.render import draw_grid

    if os.path.exists(args.output) and os.path.exists(args.sdf) and os.path.samefile(args.output, args.sdf):
        print(f"molediff view: the output {args.output} is the input file; choose another name", file=sys.stderr)
        return 1
    try:
        mols = read_conformer_groups(args.sdf, args.max_mols)
        n = draw_grid(mols, args.output, per_mol=args.per_mol, hydrogens=not args.no_hydrogens, dpi=args.dpi)
    except (OSError, ValueError) as err:
        print(f"molediff view: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({n} conformers of {len(mols)} molecules)", file=sys.stderr)
    return 0
