"""benchmarks/strain_ranking.py: MMFF94 term subsets add up to the full strain energy; misses stay misses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.strain_ranking import strain_energies
from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/strain_ranking.py", "molediff_strain_ranking_bench")


def _draws():
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)NCC"))
    AllChem.EmbedMultipleConfs(mol, 3, randomSeed=2)
    coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    coords[2, 0, 0] = np.nan
    mol.RemoveAllConformers()
    return mol, coords


def test_local_and_non_local_terms_add_up_to_the_strain_energy():
    bench = _module()
    mol, coords = _draws()
    local = bench.term_energies(mol, coords, bench.TERMS["local"])
    nonlocal_ = bench.term_energies(mol, coords, bench.TERMS["non-local"])
    full = strain_energies(mol, coords)
    np.testing.assert_allclose(local[:2] + nonlocal_[:2], full[:2], rtol=1e-9)
    assert np.isnan(local[2]) and np.isnan(nonlocal_[2]) and np.isnan(full[2])
    assert sorted(bench.TERMS["local"] + bench.TERMS["non-local"]) == sorted(bench.ALL_TERMS)


def test_relaxed_energies_are_at_most_the_drawn_ones():
    bench = _module()
    mol, coords = _draws()
    relaxed, drawn = bench.relaxed_energies(mol, coords), strain_energies(mol, coords)
    assert (relaxed[:2] <= drawn[:2] + 1e-6).all() and np.isnan(relaxed[2])


def test_summary_counts_misses_in_coverage_only():
    s = _module().summarise(np.array([0.05, 0.2, 0.4, math.inf]), [True, False, True, True])
    assert s["median"] == pytest.approx(0.2) and s["mean"] == pytest.approx(0.65 / 3)
    assert (s["cov@0.5"], s["cov@0.25"], s["cov@0.1"], s["valid"]) == (0.75, 0.5, 0.25, 0.75)
