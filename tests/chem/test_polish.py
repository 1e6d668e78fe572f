"""MMFF94-relaxed conformers polished by the diffusion model (molediff.chem.polish)."""

import numpy as np
import pytest
from rdkit import Chem

import molediff.chem.polish as polish_module
from molediff.chem.errors import RelaxationError
from molediff.chem.model import ConformerModel
from molediff.chem.polish import PolishedSampler, polish_conformers, polish_seed
from molediff.chem.relax import mmff_relaxed_coordinates
from molediff.chem.sampler_protocol import ConformerSampler, EtkdgSampler
from tests.chem.test_model import tiny_config


def _mol(smiles: str) -> Chem.Mol:
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - a.mean(0)) - (b - b.mean(0))) ** 2).sum(-1).mean())


def _bond_error(mol: Chem.Mol, xyz: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference of a bond length between two geometries (Å)."""
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    return max(abs(np.linalg.norm(xyz[i] - xyz[j]) - np.linalg.norm(reference[i] - reference[j])) for i, j in pairs)


class _Stretched(EtkdgSampler):
    """ETKDG conformers with every coordinate scaled by 1.15: each bond 15 % too long."""

    def sample(self, mols, num_confs, *, sampler=None, steps=None, seed=None, device=None):
        return [1.15 * c for c in super().sample(mols, num_confs, seed=seed)]


def test_polish_from_a_tiny_sigma_keeps_the_input_and_is_seeded():
    model = ConformerModel(tiny_config())
    mols = [_mol("CCCO"), _mol("c1ccccc1O")]
    starts = EtkdgSampler().sample(mols, 3, seed=2)
    out = polish_conformers(model, mols, starts, sigma_start=0.01, steps=2, seed=5, stereo_guidance=False)
    for coords, start in zip(out, starts):
        assert coords.shape == start.shape and np.isfinite(coords).all()
        assert max(_rms(coords[k], start[k]) for k in range(3)) < 0.1
    again = polish_conformers(model, mols, starts, sigma_start=0.01, steps=2, seed=5, stereo_guidance=False)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))


def test_polish_skips_nonfinite_conformers_and_keeps_each_molecules_count():
    model = ConformerModel(tiny_config())
    mols = [_mol("CCO"), _mol("CC(=O)N"), _mol("CCN")]
    starts = EtkdgSampler().sample(mols, 3, seed=1)
    starts[0][1:] = np.nan  # one finite conformer: both others are polished copies of it
    starts[1][:] = np.nan  # none: kept as it is, for the caller to re-sample
    starts[2] = starts[2][:2]  # another molecule with another K
    first, second, third = polish_conformers(model, mols, starts, sigma_start=0.01, steps=2, seed=0,
                                             stereo_guidance=False)
    assert first.shape == (3, 9, 3) and np.isfinite(first).all()
    assert max(_rms(first[k], starts[0][0]) for k in range(3)) < 0.1
    assert second.shape == (3, 9, 3) and np.isnan(second).all()
    assert third.shape == (2, 10, 3) and np.isfinite(third).all()
    with pytest.raises(ValueError, match="3 entries for 2 molecules"):
        polish_conformers(model, mols[:2], starts)


def test_polished_sampler_relaxes_before_polishing():
    """Stretched conformers come back with MMFF94's bond lengths: the relaxation ran before the polish."""
    model = ConformerModel(tiny_config())
    sampler = PolishedSampler(model, base=_Stretched(), sigma_start=0.01, steps=2)
    assert isinstance(sampler, ConformerSampler)
    mols = [_mol("CCCO"), _mol("c1ccccc1O")]
    out = sampler.sample(mols, 2, seed=3, stereo_guidance=False)
    stretched = _Stretched().sample(mols, 2, seed=3)
    for mol, coords, start in zip(mols, out, stretched):
        relaxed = mmff_relaxed_coordinates(mol, start)
        assert coords.shape == (2, mol.GetNumAtoms(), 3)
        for k in range(2):
            assert _bond_error(mol, start[k], relaxed[k]) > 0.15
            assert _bond_error(mol, coords[k], relaxed[k]) < 0.05
    again = sampler.sample(mols, 2, seed=3, stereo_guidance=False)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))


def test_polished_sampler_draws_from_the_model_by_default_and_describes_itself():
    model = ConformerModel(tiny_config())
    sampler = PolishedSampler(model)
    assert sampler.base is model and sampler.name == f"{model.name}+mmff-polish"
    assert sampler.elements == tuple(model.elements) and sampler.config is model.config
    assert sampler.start_label == "prior; relaxed with MMFF94, polished from sigma 0.1 (4 steps)"
    out = sampler.sample([_mol("CCO")], 2, seed=0, stereo_guidance=False)
    assert out[0].shape == (2, 9, 3) and np.isfinite(out[0]).all()
    assert polish_seed(0) != 0 and polish_seed(0) == polish_seed(0) != polish_seed(1)


def test_a_molecule_without_mmff_parameters_is_polished_unrelaxed(monkeypatch):
    def no_parameters(*args, **kwargs):
        raise RelaxationError("MMFF94 has no parameters for this molecule")

    monkeypatch.setattr(polish_module, "mmff_relaxed_coordinates", no_parameters)
    model = ConformerModel(tiny_config())
    sampler = PolishedSampler(model, base=_Stretched(), sigma_start=0.01, steps=2)
    (coords,) = sampler.sample([_mol("CCO")], 2, seed=1, stereo_guidance=False)
    (start,) = _Stretched().sample([_mol("CCO")], 2, seed=1)
    assert max(_rms(coords[k], start[k]) for k in range(2)) < 0.1  # still stretched: nothing relaxed it


def test_the_output_says_when_mmff_could_not_relax_a_molecule():
    from molediff.chem.generate import generate_conformers_batch

    sampler = PolishedSampler(ConformerModel(tiny_config()), steps=1)
    ozone, ethanol = generate_conformers_batch(["[O-][O+]=O", "CCO"], 1, 0, model=sampler, on_invalid="flag")
    assert [w for w in ozone.warnings if "MMFF94 has no parameters" in w]
    assert not [w for w in ethanol.warnings if "MMFF94" in w]
    assert "relaxed with MMFF94" in ozone.mol.GetProp("molediff_start")
    assert "MMFF94 has no parameters" in ozone.mol.GetProp("molediff_warnings")


@pytest.mark.parametrize("kwargs, match", [({"sigma_start": 0.0}, "sigma_start"), ({"steps": 0}, "steps"),
                                           ({"max_iters": 0}, "max_iters")])
def test_polished_sampler_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolishedSampler(ConformerModel(tiny_config()), **kwargs)


def test_conformers_that_the_relaxation_breaks_come_back_as_drawn(monkeypatch):
    """A relaxation that turns valid conformers into their mirror images (wrong stereo) is not polished."""
    def mirrored(mol, coords, **kwargs):
        out = np.array(coords, dtype=float, copy=True)
        out[0] *= np.array([-1.0, 1.0, 1.0])  # the first conformer flips; the others relax to themselves
        return out

    monkeypatch.setattr(polish_module, "mmff_relaxed_coordinates", mirrored)
    mol = _mol("C[C@H](N)C(=O)O")
    drawn = EtkdgSampler().sample([mol], 3, seed=4)[0]
    assert polish_module.broken_by_relaxation(mol, drawn, mirrored(mol, drawn)).tolist() == [True, False, False]
    sampler = PolishedSampler(ConformerModel(tiny_config()), base=EtkdgSampler(), sigma_start=0.01, steps=2)
    (out,) = sampler.sample([mol], 3, seed=4, stereo_guidance=False)
    assert np.array_equal(out[0], drawn[0])  # as drawn: neither relaxed nor polished
    assert not np.array_equal(out[1], drawn[1]) and _rms(out[1], drawn[1]) < 0.1  # polished


def test_broken_by_relaxation_ignores_conformers_that_were_invalid_already():
    mol = _mol("C[C@H](N)C(=O)O")
    drawn = EtkdgSampler().sample([mol], 2, seed=0)[0]
    squashed = drawn * np.array([1.0, 1.0, 0.0])  # flat: invalid before and after
    nan = np.full_like(drawn[:1], np.nan)
    assert polish_module.broken_by_relaxation(mol, np.concatenate([squashed, nan]),
                                              np.concatenate([squashed, nan])).tolist() == [False, False, False]


def test_the_polish_has_its_own_stereo_guidance(monkeypatch):
    """``stereo_guidance`` of ``sample`` steers the base sampler; the polish uses the sampler's ``guidance``."""
    seen: dict = {}

    def recording(model, mols, coords, **kwargs):
        seen.update(kwargs)
        return [np.array(c) for c in coords]

    class _Recorded(EtkdgSampler):
        def sample(self, mols, num_confs, *, stereo_guidance=True, seed=None, **kwargs):
            seen["base"] = stereo_guidance
            return super().sample(mols, num_confs, seed=seed)

    monkeypatch.setattr(polish_module, "polish_conformers", recording)
    model = ConformerModel(tiny_config())
    PolishedSampler(model, base=_Recorded()).sample([_mol("CCO")], 2, seed=0, stereo_guidance={"iters": 3},
                                                    precision="fp32")
    assert seen["base"] == {"iters": 3} and seen["precision"] == "fp32"
    assert seen["stereo_guidance"] is polish_module.DEFAULT_POLISH_GUIDANCE is False
    guided = PolishedSampler(model, base=_Recorded(), guidance=True)
    guided.sample([_mol("CCO")], 2, seed=0)
    assert seen["base"] is True and seen["stereo_guidance"] is True
    assert guided.start_label.endswith("(4 steps, guided)")
