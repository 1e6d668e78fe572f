import numpy as np
import pytest
from rdkit import Chem

pytest.importorskip("ase")
from molediff.data.g2 import atoms_to_mol, load_g2  # noqa: E402


def test_load_g2():
    g2 = load_g2()
    assert len(g2.mols) + len(g2.skipped) == 162 and len(g2.mols) > 100
    assert "HCO" in g2.skipped and "HCO" in g2.skipped["HCO"]  # radical: no valid bond orders
    benzene = g2.mols["C6H6"]
    assert Chem.MolToSmiles(Chem.RemoveHs(benzene)) == "c1ccccc1"
    assert benzene.GetNumAtoms() == 12 and benzene.GetNumConformers() == 1
    assert Chem.MolToSmiles(Chem.RemoveHs(g2.mols["CH3COOH"])) == "CC(=O)O"


def test_atoms_to_mol_errors():
    with pytest.raises(ValueError, match="weird"):
        atoms_to_mol(["C", "H"], np.zeros((2, 3)) + [[0, 0, 0], [1.1, 0, 0]], name="weird")
