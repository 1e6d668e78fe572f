"""benchmarks/drug_like.py: the header's rotatable-bond median is counted on the hydrogen-free graph."""

from __future__ import annotations

from rdkit import Chem

from tests.scripts.script_loader import load_script


def test_header_counts_rotatable_bonds_without_hydrogen_only_rotors():
    describe = load_script("benchmarks/drug_like.py", "molediff_drug_like_bench").describe
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("OCC(O)CO", "OCCO", "CCCCCC")]
    # with explicit H RDKit counts 5, 3 and 3 (median 3); the heavy-atom rotors are 2, 1 and 3
    assert describe(mols) == "median 6, atoms with H median 14, rotatable bonds median 2"
