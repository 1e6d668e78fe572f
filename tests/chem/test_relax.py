"""Force-field and tight-binding relaxation of conformers (molediff.chem.relax)."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolAlign

from molediff.chem.relax import relax_conformers
from molediff.data.g2 import load_g2

NAMES = ["CH3CH2OH", "CH3COOH", "C6H6"]


def _g2(names):
    return [Chem.Mol(load_g2(names).mols[n]) for n in names]


def _rms(a: Chem.Mol, b: Chem.Mol) -> float:
    return rdMolAlign.AlignMol(Chem.Mol(a), Chem.Mol(b))


@pytest.mark.parametrize("method, tolerance", [("mmff", 0.15), ("xtb", 0.10)])
def test_relaxing_a_reference_geometry_barely_moves_it(method, tolerance):
    """G2 geometries are near minima of both MMFF94 and GFN2-xTB."""
    if method == "xtb":
        pytest.importorskip("tblite")
    for mol in _g2(NAMES):
        before = Chem.Mol(mol)
        energies = relax_conformers(mol, method)
        assert len(energies) == 1 and np.isfinite(energies[0])
        assert 0.0 < _rms(mol, before) < tolerance


@pytest.mark.parametrize("method", ["mmff", "xtb"])
def test_relaxation_repairs_a_stretched_bond(method):
    if method == "xtb":
        pytest.importorskip("tblite")
    mol = _g2(["CH3CH2OH"])[0]
    pos = mol.GetConformer().GetPositions()
    c, o = [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "C" and any(n.GetSymbol() == "O" for n in a.GetNeighbors())][0], \
        [a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "O"][0]
    ref_length = np.linalg.norm(pos[c] - pos[o])
    stretched = pos.copy()
    stretched[o] = pos[c] + 1.25 * (pos[o] - pos[c])
    for i, p in enumerate(stretched):
        mol.GetConformer().SetAtomPosition(i, p.tolist())
    relax_conformers(mol, method)
    new = mol.GetConformer().GetPositions()
    assert abs(np.linalg.norm(new[c] - new[o]) - ref_length) < 0.05


def test_a_relaxation_cut_short_by_max_iters_says_it_did_not_converge():
    mol = _g2(["CH3CH2OH"])[0]
    rng = np.random.default_rng(0)
    pos = mol.GetConformer().GetPositions() + rng.normal(scale=0.3, size=(mol.GetNumAtoms(), 3))
    mol.GetConformer().SetPositions(pos)
    short = Chem.Mol(mol)
    relax_conformers(short, "mmff", max_iters=2)
    assert short.GetConformer().GetProp("molediff_relaxed") == "mmff"
    assert short.GetConformer().GetProp("molediff_relax_converged") == "0"  # its energy is not a minimum
    relax_conformers(mol, "mmff", max_iters=2000)
    assert mol.GetConformer().GetProp("molediff_relax_converged") == "1"


def test_a_relaxation_failing_on_one_conformer_relaxes_the_others(monkeypatch):
    import molediff.chem.relax as relax_module
    from molediff.chem.errors import RelaxationError

    real = relax_module._mmff

    def flaky(mol, max_iters):
        step = real(mol, max_iters)

        def maybe(cid):
            if cid == 1:
                raise RelaxationError("SCF did not converge")
            return step(cid)
        return maybe

    monkeypatch.setattr(relax_module, "_mmff", flaky)
    mol = _g2(["CH3CH2OH"])[0]
    for _ in range(2):
        mol.AddConformer(Chem.Conformer(mol.GetConformer()), assignId=True)
    before = [c.GetPositions() for c in mol.GetConformers()]
    energies = relax_conformers(mol, "mmff")
    assert np.isfinite(energies[0]) and np.isnan(energies[1]) and np.isfinite(energies[2])
    labels = [c.GetProp("molediff_relaxed") for c in mol.GetConformers()]
    assert labels == ["mmff", "failed", "mmff"]
    assert np.array_equal(mol.GetConformer(1).GetPositions(), before[1])


def test_mmff_relaxed_coordinates_minimise_and_keep_nonfinite_rows():
    from molediff.chem.relax import mmff_relaxed_coordinates

    mol = _g2(["CH3CH2OH"])[0]
    pos = mol.GetConformer().GetPositions()
    coords = np.stack([1.2 * pos, np.full_like(pos, np.nan), pos])
    out = mmff_relaxed_coordinates(mol, coords)
    assert out.shape == coords.shape and out is not coords
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    assert np.array_equal(coords[0], 1.2 * pos)  # the input is not modified
    for k in (0, 2):  # both land near the G2 geometry, the stretched one from 20 % out
        probe = Chem.Mol(mol)
        probe.GetConformer().SetPositions(out[k])
        assert _rms(probe, mol) < 0.15


def test_mmff_relaxed_coordinates_raise_without_parameters():
    from molediff.chem.errors import RelaxationError
    from molediff.chem.relax import mmff_relaxed_coordinates

    mol = Chem.AddHs(Chem.MolFromSmiles("[SiH3][Se][SiH3]"))
    with pytest.raises(RelaxationError, match="parameters"):
        mmff_relaxed_coordinates(mol, np.zeros((1, mol.GetNumAtoms(), 3)))
