"""ETKDG starting geometries refined by the diffusion model (molediff.chem.refine)."""

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.model import ConformerModel
from molediff.chem.refine import EtkdgRefinedSampler, prior_count
from molediff.chem.sampler_protocol import ConformerSampler, EtkdgSampler
from tests.chem.test_model import tiny_config


def _mol(smiles: str) -> Chem.Mol:
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


def test_low_sigma_keeps_the_etkdg_geometry_and_is_seeded():
    model = ConformerModel(tiny_config())
    refiner = EtkdgRefinedSampler(model, sigma_start=0.01, steps=2)
    assert isinstance(refiner, ConformerSampler) and refiner.name.endswith("+etkdg-start")
    mols = [_mol("CCCO"), _mol("c1ccccc1O")]
    out = refiner.sample(mols, 3, seed=4, stereo_guidance=False)
    starts = EtkdgSampler().sample(mols, 3, seed=4)  # the same seed embeds the same starting geometries
    for coords, start in zip(out, starts):
        assert coords.shape == start.shape and np.isfinite(coords).all()
        for k in range(3):
            assert _rms(coords[k], start[k] - start[k].mean(0)) < 0.1
    again = refiner.sample(mols, 3, seed=4, stereo_guidance=False)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))


class _FailsOnSecond(EtkdgSampler):
    """ETKDG that embeds nothing for the second molecule and only one conformer of the first."""

    def sample(self, mols, num_confs, **kw):
        out = super().sample(mols, num_confs, **kw)
        out[0][1:] = np.nan
        out[1][:] = np.nan
        return out


def test_failed_embeddings_reuse_the_others_or_fall_back_to_the_prior():
    model = ConformerModel(tiny_config())
    refiner = EtkdgRefinedSampler(model, sigma_start=0.01, steps=2, etkdg=_FailsOnSecond())
    mols = [_mol("CCO"), _mol("CC(=O)N")]
    first, second = refiner.sample(mols, 2, seed=1, stereo_guidance=False)
    assert np.isfinite(first).all() and np.isfinite(second).all()
    assert _rms(first[0], first[1]) < 0.1  # both refined the one embedding that succeeded
    assert second.shape == (2, 9, 3)


def test_sigma_start_must_be_positive():
    with pytest.raises(ValueError, match="sigma_start"):
        EtkdgRefinedSampler(ConformerModel(tiny_config()), sigma_start=0.0)
    with pytest.raises(ValueError, match="sigma_start must be > 0 and finite, got inf"):
        EtkdgRefinedSampler(ConformerModel(tiny_config()), sigma_start=float("inf"))


def test_prior_count_rounds_halves_up():
    assert [prior_count(k, 0.5) for k in (1, 2, 3, 10)] == [1, 1, 2, 5]
    assert prior_count(10, 0.0) == 0 and prior_count(10, 0.3) == 3 and prior_count(4, 0.3) == 1


def test_prior_count_rounds_halves_up_despite_float_error():
    # 0.7 * 45 is 31.499999999999996 in binary floating point, 0.29 * 50 14.499999999999998
    assert prior_count(45, 0.7) == 32 and prior_count(50, 0.29) == 15 and prior_count(25, 0.58) == 15
    assert prior_count(45, 0.69) == 31 and prior_count(50, 0.289) == 14


def test_mixed_start_samples_a_share_from_the_prior_and_refines_the_rest():
    model = ConformerModel(tiny_config())
    mixed = EtkdgRefinedSampler(model, sigma_start=0.01, steps=2, prior_share=0.5)
    assert isinstance(mixed, ConformerSampler) and mixed.name.endswith("+mixed-start")
    assert mixed.start_label.startswith("mixed: prior share 0.5")
    mols = [_mol("CCCO"), _mol("c1ccccc1O")]
    out = mixed.sample(mols, 3, seed=4, stereo_guidance=False)
    starts = EtkdgSampler().sample(mols, 1, seed=4)  # the refined part embeds with the call's seed
    for coords, start in zip(out, starts):
        assert coords.shape == (3, start.shape[1], 3) and np.isfinite(coords).all()
        assert _rms(coords[2], start[0] - start[0].mean(0)) < 0.1  # conformer 3 refines embedding 1
        for k in range(2):  # conformers 1-2 come from the prior (an untrained network: far from ETKDG)
            assert _rms(coords[k], start[0] - start[0].mean(0)) > 0.5
    again = mixed.sample(mols, 3, seed=4, stereo_guidance=False)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))
    only_prior = mixed.sample(mols[:1], 1, seed=4, stereo_guidance=False)[0]  # one conformer: from the prior
    assert only_prior.shape == (1, 12, 3) and np.isfinite(only_prior).all()


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_prior_share_must_leave_something_to_refine(share):
    with pytest.raises(ValueError, match="prior_share"):
        EtkdgRefinedSampler(ConformerModel(tiny_config()), prior_share=share)
