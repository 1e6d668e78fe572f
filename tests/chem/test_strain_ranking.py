"""Keeping the least MMFF94-strained of more draws: energies as drawn, ranking, the sampler and its provenance."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.generate import generate_conformers_batch
from molediff.chem.strain_ranking import StrainRankedSampler, draw_count, least_strained, strain_energies


def embedded(smiles: str, n: int, seed: int = 1) -> tuple[Chem.Mol, np.ndarray]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(mol, n, randomSeed=seed)
    AllChem.MMFFOptimizeMoleculeConfs(mol)
    coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    mol.RemoveAllConformers()
    return mol, coords


def stretched(coords: np.ndarray, factor: float) -> np.ndarray:
    """Every bond ``factor`` times its length (a uniform scaling about the centroid)."""
    centre = coords.mean(axis=0)
    return centre + factor * (coords - centre)


def test_energies_are_mmff94_at_the_drawn_geometry_without_minimisation():
    mol, coords = embedded("CC(=O)NC", 3)
    coords = np.concatenate([coords, stretched(coords[0], 1.1)[None]])
    energy = strain_energies(mol, coords)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    for i, xyz in enumerate(coords):
        probe = Chem.Mol(mol)
        conf = Chem.Conformer(mol.GetNumAtoms())
        conf.SetPositions(xyz)
        probe.AddConformer(conf, assignId=True)
        assert energy[i] == pytest.approx(AllChem.MMFFGetMoleculeForceField(probe, props).CalcEnergy(), abs=1e-8)
    assert energy[3] > energy[0] + 10  # 10 % longer bonds cost well over 10 kcal/mol
    with pytest.raises(ValueError, match=r"shape \[M, 12, 3\], got \(4, 5, 3\)"):
        strain_energies(mol, coords[:, :5])


def test_non_finite_draws_and_molecules_without_parameters_have_no_energy():
    mol, coords = embedded("CCO", 3)
    coords[1, 2, 0] = np.nan
    energy = strain_energies(mol, coords)
    assert np.isnan(energy[1]) and np.isfinite(energy[[0, 2]]).all()
    boron = Chem.AddHs(Chem.MolFromSmiles("CB(C)C"))  # MMFF94 has no boron
    AllChem.EmbedMultipleConfs(boron, 2, randomSeed=0)
    xyz = np.stack([c.GetPositions() for c in boron.GetConformers()])
    assert np.isnan(strain_energies(boron, xyz)).all()
    assert least_strained(boron, xyz, 1).tolist() == [0]  # draw order when nothing can be ranked


def test_least_strained_orders_by_energy_with_unknown_energies_last_in_draw_order():
    mol, base = embedded("CCCO", 1)
    coords = np.stack([stretched(base[0], f) for f in (1.08, 1.0, 1.2, 1.03)] + [np.full_like(base[0], np.nan)])
    assert least_strained(mol, coords, 5).tolist() == [1, 3, 0, 2, 4]
    assert least_strained(mol, coords, 2).tolist() == [1, 3]
    coords[1] = np.nan
    assert least_strained(mol, coords, 5).tolist() == [3, 0, 2, 1, 4]


@pytest.mark.parametrize("k, draws, expected", [(10, 1.1, 11), (10, 1.5, 15), (10, 2, 20), (3, 1, 3), (1, 1.01, 2)])
def test_draw_count(k, draws, expected):
    assert draw_count(k, draws) == expected


class Distorting:
    """A base sampler whose every other draw has stretched bonds; records what it was asked for."""

    name, elements, max_atoms = "distorting", ("H", "C", "N", "O"), 50

    def __init__(self):
        self.calls = []

    def check_supported(self, mol):
        pass

    def sample(self, mols, num_confs, **options):
        self.calls.append((len(mols), num_confs, options.get("seed")))
        out = []
        for mol in mols:
            good = embedded_like(mol)
            out.append(np.stack([stretched(good, 1.0 if d % 2 else 1.15) for d in range(num_confs)]))
        return out


def embedded_like(mol: Chem.Mol) -> np.ndarray:
    """One MMFF94-minimised geometry ``[N, 3]`` of ``mol``, in its atom order."""
    m = Chem.Mol(mol)
    AllChem.EmbedMolecule(m, randomSeed=3)
    AllChem.MMFFOptimizeMolecule(m)
    return m.GetConformer().GetPositions()


def test_the_sampler_keeps_the_least_strained_draws_and_names_them():
    base = Distorting()
    sampler = StrainRankedSampler(base, draws=2)
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("CCO", "CC(=O)N")]
    kept, draws = sampler.sample_with_draws(mols, 3, seed=5)
    assert base.calls == [(2, 6, 5)]  # 2 x 3 draws of both molecules in one call, options passed on
    for mol, coords, index in zip(mols, kept, draws):
        assert coords.shape == (3, mol.GetNumAtoms(), 3)
        assert sorted(index.tolist()) == [1, 3, 5]  # the unstretched draws
        energy = strain_energies(mol, coords)
        assert (np.diff(energy) >= -1e-9).all()  # least strained first
    assert [c.shape for c in sampler.sample(mols, 2, seed=5)] == [(2, 9, 3), (2, 9, 3)]
    assert sampler.name == "distorting"
    assert sampler.start_label == "prior; the least MMFF94-strained of 2x as many draws"
    for bad in (0.5, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="draws must be a number >= 1"):
            StrainRankedSampler(base, draws=bad)


def test_shipped_model_ranked_conformers_record_the_draw_that_redraws_them():
    """``molediff_draw`` names the model's own draw, so the redraw recipe of an unranked run still holds."""
    from molediff.chem.model import load_conformer_model

    model = load_conformer_model()
    (res,) = generate_conformers_batch(["CC(O)C(=O)NC"], 3, 4, model=StrainRankedSampler(model, 3))
    assert res.ok and res.mol.GetNumConformers() == 3
    draws = [int(c.GetProp("molediff_draw")) for c in res.mol.GetConformers()]
    assert len(set(draws)) == 3 and max(draws) < 9 and draws != [0, 1, 2]
    for conf in res.mol.GetConformers():
        draw, call_seed = int(conf.GetProp("molediff_draw")), int(conf.GetProp("molediff_call_seed"))
        raw = model.sample([Chem.Mol(res.mol)], draw + 1, seed=call_seed)[0][draw]
        if conf.GetProp("molediff_stereo_fix") == "none":
            np.testing.assert_allclose(conf.GetPositions(), raw - raw.mean(axis=0), atol=1e-3)
    assert res.mol.GetProp("molediff_start") == "prior; the least MMFF94-strained of 3x as many draws"


def test_any_sampler_can_be_ranked_and_a_molecule_without_mmff94_parameters_is_named(make_fake):
    """Wrapping a sampler without precision settings (ETKDG, a fake) crashed the provenance; a molecule MMFF94
    cannot rank kept its first draws without a word."""
    base = make_fake(elements=("H", "B", "C", "N", "O", "F"))
    results = list(generate_conformers_batch(["CCO", "CB(C)C"], 2, 0, model=StrainRankedSampler(base, 2)))
    assert [r.ok for r in results] == [True, True]
    assert not any("MMFF94" in w for w in results[0].warnings)
    assert any("MMFF94 has no parameters" in w and "not ranked" in w for w in results[1].warnings)
    assert results[1].mol.GetProp("molediff_start").endswith("the least MMFF94-strained of 2x as many draws")
    assert not results[0].mol.HasProp("molediff_precision")


def test_a_polished_ranked_sampler_passes_the_ranking_note_on():
    from molediff.chem.model import load_conformer_model
    from molediff.chem.polish import PolishedSampler

    polished = PolishedSampler(load_conformer_model(), base=StrainRankedSampler(load_conformer_model(), 2))
    boron = Chem.AddHs(Chem.MolFromSmiles("CB(C)C"))
    notes = polished.warnings_for(boron)
    assert len(notes) == 2 and "not ranked" in notes[0] and "polished without the MMFF94" in notes[1]
    assert polished.warnings_for(Chem.AddHs(Chem.MolFromSmiles("CCO"))) == []


def test_polished_ranked_conformers_record_the_model_draw_they_were_polished_from():
    """With ``--draws --polish`` ``molediff_draw`` named the conformer's place in the ranked output (0, 1, 2), not
    the model's draw that it was polished from."""
    from molediff.chem.model import load_conformer_model
    from molediff.chem.polish import PolishedSampler

    model = load_conformer_model()
    ranked = StrainRankedSampler(model, 3)
    (res,) = generate_conformers_batch(["CC(O)C(=O)NC"], 3, 4, model=PolishedSampler(model, base=ranked))
    assert res.ok
    first = [c for c in res.mol.GetConformers() if c.GetProp("molediff_round") == "0"]
    assert first
    call_seed = int(first[0].GetProp("molediff_call_seed"))
    _, (chosen,) = ranked.sample_with_draws([Chem.Mol(res.mol)], 3, seed=call_seed)
    assert chosen.tolist() != [0, 1, 2]
    assert {int(c.GetProp("molediff_draw")) for c in first} <= set(chosen.tolist())
