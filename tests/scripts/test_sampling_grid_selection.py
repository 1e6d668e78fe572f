"""benchmarks/sampling_grid.py: the seeded molecules are drawn from QM9 validation, and
``--min-rotatable-bonds`` counts rotatable bonds as the QM9 table's buckets do (hydrogen-free graph)."""

from __future__ import annotations

from types import SimpleNamespace

from rdkit import Chem

from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/sampling_grid.py", "molediff_sampling_grid")


def _records(smiles):
    return [SimpleNamespace(index=i, smiles=s, mol=Chem.AddHs(Chem.MolFromSmiles(s))) for i, s in enumerate(smiles)]


def test_rotatable_bonds_ignore_bonds_that_only_turn_a_hydrogen():
    count = _module().rotatable_bonds
    assert count(Chem.AddHs(Chem.MolFromSmiles("CCO"))) == 0  # RDKit counts 1 with the explicit H
    assert count(Chem.AddHs(Chem.MolFromSmiles("OCC(O)CO"))) == 2  # 5 with the explicit H
    assert count(Chem.AddHs(Chem.MolFromSmiles("CCCCC"))) == 2


def test_flexible_draw_uses_validation_only_and_the_hydrogen_free_count(monkeypatch):
    bench = _module()
    splits = []
    data = _records(["OCC(O)CO", "CCCCCC", "OCCO", "CCCCCCC", "c1ccccc1O"])

    def fake_load(split):
        splits.append(split)
        return data

    monkeypatch.setattr(bench, "load_qm9", fake_load)
    picked = bench.select_validation_molecules(10, seed=0, min_rotatable_bonds=3)
    # with explicit H RDKit counts glycerol 5 and ethylene glycol 3, on the heavy-atom graph 2 and 1
    assert [m.smiles for m in picked] == ["CCCCCC", "CCCCCCC"]
    assert len(bench.select_validation_molecules(2, seed=0)) == 2
    assert set(splits) == {"valid"}
