"""Conformer-ensemble metrics: symmetry-aware heavy-atom RMSD, coverage and matching.

All RMSDs are heavy-atom RMSDs after optimal rigid alignment (rotation + translation, no
reflection), minimised over the molecule's symmetries. RDKit's ``rdMolAlign.GetBestRMS`` does
both with its defaults on hydrogen-free copies: the atom maps are the substructure matches of
the heavy-atom graph *with bond orders* (a ``=CH2`` is not a ``-CH3``, a ring double bond is not
a ring single bond), with conjugated terminal groups such as carboxylates, nitro groups and
carboxylic acids symmetrised; they are capped at ``max_matches`` so that highly symmetric
molecules cannot stall an evaluation. (Element-and-topology maps alone would let the alignment
swap a methyl with a methylene or rotate a cyclohexene ring onto its single bonds, which lowers
RMSDs below the true value.)

Definitions for multi-reference sets (GeoMol / GeoDiff, Ganea et al. 2021; Xu et al. 2022), with
``D[k, l]`` the RMSD between generated conformer k and reference conformer l:

* COV-R(δ) = fraction of references l with ``min_k D[k, l] < δ``; AMR-R = mean_l min_k D[k, l]
* COV-P(δ) = fraction of generated k with ``min_l D[k, l] < δ``; AMR-P = mean_k min_l D[k, l]

Each is computed per molecule, then averaged (mean and median) over molecules.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdMolAlign

from molediff.chem.bonds import graph_template

__all__ = [
    "best_rmsd", "rmsd_matrix", "min_rmsd_to_reference", "conformer_metrics",
    "coverage_matching", "DEFAULT_THRESHOLDS",
]

DEFAULT_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def _heavy(mol: Chem.Mol) -> Chem.Mol:
    # RemoveAllHs, not RemoveHs: RemoveHs keeps hydrogens that define double-bond stereo (the H of
    # an imine C=N-H whose E/Z is set, as perceived from every QM9 geometry), isotopic and bridging
    # ones, and those atoms would enter a "heavy-atom" RMSD.
    return Chem.RemoveAllHs(mol, sanitize=False) if any(
        a.GetAtomicNum() == 1 for a in mol.GetAtoms()) else Chem.Mol(mol)


def _check_same_graph(probe: Chem.Mol, ref: Chem.Mol) -> None:
    """Raise ValueError unless the two heavy-atom graphs have the same elements, topology and isotope labels."""
    query = graph_template(probe)
    target = graph_template(ref)
    Chem.FastFindRings(query)
    Chem.FastFindRings(target)
    match = target.GetSubstructMatch(query, useChirality=False)
    if len(match) != probe.GetNumAtoms() or probe.GetNumAtoms() != ref.GetNumAtoms() \
            or probe.GetNumBonds() != ref.GetNumBonds():
        raise ValueError("probe and reference are not the same molecular graph "
                         f"({Chem.MolToSmiles(probe)} vs {Chem.MolToSmiles(ref)})")
    labels = [", ".join(sorted(f"{a.GetIsotope()}{a.GetSymbol()}" for a in m.GetAtoms() if a.GetIsotope())) or "none"
              for m in (probe, ref)]
    if labels[0] != labels[1]:
        raise ValueError(f"probe and reference have the same graph but other isotope labels ({labels[0]} vs "
                         f"{labels[1]}: {Chem.MolToSmiles(probe)} vs {Chem.MolToSmiles(ref)})")


def _check_finite(mol: Chem.Mol, conf_ids: Sequence[int], role: str) -> None:
    """Raise ValueError naming the first conformer of ``mol`` with a NaN / inf coordinate.

    RDKit aligns such a conformer without complaint and returns a meaningless RMSD (~1e154 Å).
    """
    for cid in conf_ids:
        if not np.isfinite(mol.GetConformer(cid).GetPositions()).all():
            raise ValueError(f"{role} conformer {cid} has non-finite (NaN / inf) coordinates")


def rmsd_matrix(probe: Chem.Mol, ref: Chem.Mol, probe_conf_ids: Sequence[int] | None = None,
                ref_conf_ids: Sequence[int] | None = None, *, heavy_atoms_only: bool = True,
                max_matches: int = 10_000) -> np.ndarray:
    """Symmetry-aware RMSD between every conformer of ``probe`` and every conformer of ``ref``.

    Parameters
    ----------
    probe, ref : rdkit.Chem.Mol
        The same molecule (atom orders may differ), each with one or more conformers.
    probe_conf_ids, ref_conf_ids : conformer ids (default: all)
    heavy_atoms_only : drop hydrogens first (the standard for conformer benchmarks)
    max_matches : cap on enumerated automorphisms

    Returns
    -------
    D : [K, L] float64 array in Å. Inputs are not modified.

    Raises
    ------
    ValueError
        Different molecules, or a conformer with non-finite coordinates.
    """
    p = _heavy(probe) if heavy_atoms_only else Chem.Mol(probe)
    r = _heavy(ref) if heavy_atoms_only else Chem.Mol(ref)
    kp = [c.GetId() for c in p.GetConformers()] if probe_conf_ids is None else list(probe_conf_ids)
    kr = [c.GetId() for c in r.GetConformers()] if ref_conf_ids is None else list(ref_conf_ids)
    _check_same_graph(p, r)
    _check_finite(p, kp, "probe")
    _check_finite(r, kr, "reference")
    out = np.empty((len(kp), len(kr)))
    work = Chem.Mol(p)  # GetBestRMS moves the probe: align a scratch copy
    for a, cid in enumerate(kp):
        for b, rid in enumerate(kr):
            try:
                out[a, b] = rdMolAlign.GetBestRMS(work, r, prbId=cid, refId=rid, maxMatches=max_matches)
            except RuntimeError as err:  # same topology, other bond orders / charges
                raise ValueError("probe and reference have the same graph but not the same bond orders "
                                 f"or charges ({Chem.MolToSmiles(p)} vs {Chem.MolToSmiles(r)}): {err}") from err
    return out


def best_rmsd(probe: Chem.Mol, ref: Chem.Mol, probe_conf_id: int = -1, ref_conf_id: int = -1,
              *, heavy_atoms_only: bool = True, max_matches: int = 10_000) -> float:
    """Symmetry-aware RMSD (Å) between one probe and one reference conformer."""
    pid = probe.GetConformer(probe_conf_id).GetId()
    rid = ref.GetConformer(ref_conf_id).GetId()
    return float(rmsd_matrix(probe, ref, [pid], [rid], heavy_atoms_only=heavy_atoms_only,
                             max_matches=max_matches)[0, 0])


def min_rmsd_to_reference(conformers: Chem.Mol | Sequence[Chem.Mol], ref: Chem.Mol,
                          ref_conf_id: int = -1, **kwargs) -> tuple[float, np.ndarray]:
    """RMSD of every generated conformer to one reference conformer, and their minimum.

    ``conformers`` is a molecule with K conformers or a sequence of molecules (all their
    conformers are used). Returns ``(min, rmsds [K])``; ``min`` is ``inf`` when K = 0.
    """
    mols = [conformers] if isinstance(conformers, Chem.Mol) else list(conformers)
    rid = ref.GetConformer(ref_conf_id).GetId()
    parts = [rmsd_matrix(m, ref, None, [rid], **kwargs)[:, 0] for m in mols if m.GetNumConformers()]
    rmsds = np.concatenate(parts) if parts else np.zeros(0)
    return (float(rmsds.min()) if rmsds.size else float("inf")), rmsds


def conformer_metrics(rmsds: Sequence[np.ndarray],
                      thresholds: Sequence[float] = (0.1, 0.25, 0.5)) -> dict[str, float]:
    """Aggregate per-molecule RMSDs of generated conformers to a single reference (QM9 DFT).

    Parameters
    ----------
    rmsds : one [K_i] array per molecule (K_i = 0 means nothing was generated: counts as a miss)

    Returns
    -------
    dict with ``num_molecules``, ``mean_min_rmsd``, ``median_min_rmsd``, ``mean_rmsd`` (over all
    conformers), ``coverage@δ`` (fraction of molecules with min RMSD < δ) and
    ``failed_molecules`` (K_i = 0; excluded from the means, counted as misses in coverage).
    """
    mins = np.array([np.min(r) if len(r) else np.inf for r in rmsds], dtype=np.float64)
    finite = mins[np.isfinite(mins)]
    everything = np.concatenate([np.asarray(r, dtype=np.float64) for r in rmsds]) \
        if len(rmsds) else np.zeros(0)
    out = {
        "num_molecules": float(len(mins)),
        "failed_molecules": float(np.sum(~np.isfinite(mins))),
        "mean_min_rmsd": float(finite.mean()) if finite.size else float("nan"),
        "median_min_rmsd": float(np.median(finite)) if finite.size else float("nan"),
        "mean_rmsd": float(everything.mean()) if everything.size else float("nan"),
    }
    for t in thresholds:
        out[f"coverage@{t:g}"] = float(np.mean(mins < t)) if mins.size else float("nan")
    return out


def coverage_matching(matrices: Sequence[np.ndarray],
                      thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, np.ndarray]:
    """COV-R / COV-P at each threshold and AMR-R / AMR-P, mean and median over molecules.

    Parameters
    ----------
    matrices : one ``D [K_gen, L_ref]`` RMSD matrix per molecule (see :func:`rmsd_matrix`)

    Returns
    -------
    dict: ``thresholds`` [T]; ``cov_r_mean``, ``cov_r_median``, ``cov_p_mean``, ``cov_p_median``
    [T]; ``amr_r_mean``, ``amr_r_median``, ``amr_p_mean``, ``amr_p_median`` scalars (0-d arrays);
    ``molecules`` and ``molecules_with_conformers`` (ints). A molecule without generated conformers has
    COV-R = 0 and AMR-R = inf; the precision side (COV-P, AMR-P) has nothing to average for it and is taken
    over the ``molecules_with_conformers`` only, so report that count next to them.
    """
    th = np.asarray(thresholds, dtype=np.float64)
    cov_r, cov_p, amr_r, amr_p = [], [], [], []
    for d in matrices:
        d = np.asarray(d, dtype=np.float64)
        if d.shape[1] == 0:
            raise ValueError("a molecule has no reference conformers")
        if d.shape[0] == 0:
            cov_r.append(np.zeros_like(th))
            amr_r.append(np.inf)
            continue
        min_over_gen, min_over_ref = d.min(0), d.min(1)
        cov_r.append((min_over_gen[None, :] < th[:, None]).mean(1))
        cov_p.append((min_over_ref[None, :] < th[:, None]).mean(1))
        amr_r.append(min_over_gen.mean())
        amr_p.append(min_over_ref.mean())

    def stat(values, fn):
        return fn(np.asarray(values), axis=0) if len(values) else np.full_like(th, np.nan)

    return {
        "thresholds": th,
        "cov_r_mean": stat(cov_r, np.mean), "cov_r_median": stat(cov_r, np.median),
        "cov_p_mean": stat(cov_p, np.mean), "cov_p_median": stat(cov_p, np.median),
        "amr_r_mean": np.asarray(np.mean(amr_r)), "amr_r_median": np.asarray(np.median(amr_r)),
        "amr_p_mean": np.asarray(np.mean(amr_p) if amr_p else np.nan),
        "amr_p_median": np.asarray(np.median(amr_p) if amr_p else np.nan),
        "molecules": len(cov_r), "molecules_with_conformers": len(cov_p),
    }
