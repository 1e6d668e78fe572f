"""GEOM (Axelrod & Gómez-Bombarelli 2022) ``rdkit_folder`` loader: multi-conformer references.

Layout of a downloaded ``rdkit_folder``::

    rdkit_folder/
      summary_drugs.json     {smiles: {"pickle_path": "drugs/<name>.pickle", ...}, ...}
      drugs/<name>.pickle    {"smiles": str, "conformers": [{"rd_mol": Mol,
                                "boltzmannweight": float, "totalenergy": float, ...}, ...]}

Security: the per-molecule files are Python pickles, GEOM's own distribution format. Unpickling
runs arbitrary code, so only load a GEOM copy you downloaded yourself from the official source
(Harvard Dataverse, doi:10.7910/DVN/JNGTDF). molediff never writes pickles.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rdkit import Chem

__all__ = ["GeomRecord", "load_geom_pickle", "iter_geom", "GeomFormatError"]


class GeomFormatError(ValueError):
    """A GEOM file does not have the expected structure."""


@dataclass
class GeomRecord:
    """One molecule: ``mol`` (explicit Hs) holds all conformers; ``weights`` [K] sum to 1.

    ``energies`` [K] are GEOM's total energies (Hartree; NaN when absent).
    """

    smiles: str
    mol: Chem.Mol
    weights: np.ndarray
    energies: np.ndarray

    @property
    def num_conformers(self) -> int:
        return self.mol.GetNumConformers()


def load_geom_pickle(path: str | Path, max_conformers: int | None = None) -> GeomRecord:
    """Read one GEOM molecule pickle (trusted input only, see the module docstring).

    Conformers are merged into one ``Mol`` (atom order of the first conformer, which GEOM keeps
    identical across conformers); with ``max_conformers`` the most Boltzmann-weighted are kept.
    """
    path = Path(path)
    if max_conformers is not None and max_conformers < 1:
        raise ValueError(f"max_conformers must be a positive integer, got {max_conformers!r}")
    with open(path, "rb") as fh:
        data = pickle.load(fh)  # noqa: S301 - GEOM's distribution format, trusted user data
    confs = data.get("conformers") if isinstance(data, dict) else None
    if not isinstance(confs, list) or not confs:
        raise GeomFormatError(f"{path}: expected a dict with a non-empty 'conformers' list")
    for k, c in enumerate(confs):
        if not isinstance(c, dict):
            raise GeomFormatError(f"{path}: conformer {k} is a {type(c).__name__}, not a dict")
    weights = np.array([_number(c.get("boltzmannweight", np.nan), path, k, "boltzmannweight")
                        for k, c in enumerate(confs)])
    if (weights < 0).any() or np.isinf(weights).any():
        raise GeomFormatError(f"{path}: Boltzmann weights must be finite and non-negative, "
                              f"got {weights.tolist()}")
    if max_conformers is not None:
        order = np.argsort(-np.nan_to_num(weights, nan=-1.0), kind="stable")[:max_conformers]
        confs, weights = [confs[i] for i in order], weights[order]
    first = confs[0].get("rd_mol")
    if not isinstance(first, Chem.Mol):
        raise GeomFormatError(f"{path}: conformer 0 has no RDKit 'rd_mol'")
    mol = Chem.Mol(first)
    mol.RemoveAllConformers()
    symbols = [a.GetAtomicNum() for a in first.GetAtoms()]
    for k, c in enumerate(confs):
        rd = c.get("rd_mol")
        if not isinstance(rd, Chem.Mol) or [a.GetAtomicNum() for a in rd.GetAtoms()] != symbols:
            raise GeomFormatError(f"{path}: conformer {k} has a different atom list")
        if rd.GetNumConformers() == 0:
            raise GeomFormatError(f"{path}: conformer {k}'s 'rd_mol' has no coordinates")
        conf = Chem.Conformer(rd.GetConformer())
        conf.SetId(k)
        mol.AddConformer(conf, assignId=False)
    if np.isnan(weights).any():
        weights = np.full(len(confs), 1.0 / len(confs))
    if weights.sum() <= 0:
        raise GeomFormatError(f"{path}: the Boltzmann weights of the conformers sum to 0")
    weights = weights / weights.sum()
    energies = np.array([_number(c.get("totalenergy", np.nan), path, k, "totalenergy")
                         for k, c in enumerate(confs)])
    smiles = str(data.get("smiles", Chem.MolToSmiles(Chem.RemoveHs(mol))))
    mol.SetProp("_Name", smiles)
    return GeomRecord(smiles, mol, weights, energies)


def _number(value, path: Path, k: int, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GeomFormatError(f"{path}: conformer {k} has a non-numeric {key!r}: {value!r}") from None


def iter_geom(root: str | Path, subset: str = "drugs", *, limit: int | None = None,
              max_conformers: int | None = None) -> Iterator[GeomRecord | GeomFormatError]:
    """Yield records listed in ``summary_<subset>.json`` (sorted by SMILES, for determinism).

    Broken or missing files are yielded as :class:`GeomFormatError` instances, so a caller can
    count them and go on.
    """
    root = Path(root)
    summary_path = root / f"summary_{subset}.json"
    with open(summary_path) as fh:
        summary = json.load(fh)
    count = 0
    for smiles in sorted(summary):
        if limit is not None and count >= limit:
            return
        rel = summary[smiles].get("pickle_path")
        if not rel:
            continue
        count += 1
        try:
            yield load_geom_pickle(root / rel, max_conformers)
        except (OSError, GeomFormatError, pickle.UnpicklingError, EOFError, AttributeError,
                ImportError) as err:  # the last two: pickled classes that do not load here
            yield GeomFormatError(f"{smiles}: {err}")
