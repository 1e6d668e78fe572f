"""Particle guidance: the repulsion between conformers of one molecule, its invariances, and guided sampling."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from molediff.chem.particle_guidance import ConformerRepulsion, particle_guidance_options, torsion_pairs

OPTIONS = {"weight": 1.0, "bandwidth": 0.5, "sigma_range": (0.5, 10.0)}


def _random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q))


def _all_pairs(n: int) -> np.ndarray:
    i, j = np.triu_indices(n, k=1)
    return np.stack([i, j], 1)


def test_torsion_pairs_are_heavy_atoms_three_or_more_bonds_apart():
    assert torsion_pairs(Chem.AddHs(Chem.MolFromSmiles("CCCCO"))).tolist() == [[0, 3], [0, 4], [1, 4]]
    assert torsion_pairs(Chem.AddHs(Chem.MolFromSmiles("CCO"))).shape == (0, 2)  # hydrogens never count


def test_only_conformers_of_the_same_molecule_are_compared():
    templates = [_all_pairs(3), _all_pairs(2)]  # 3 and 1 pairs
    rep = ConformerRepulsion.build(templates, [0, 0, 0, 1], [4, 4, 4, 3], **OPTIONS)
    assert rep.segment_size.tolist() == [3.0, 3.0, 3.0]  # (0,1), (0,2), (1,2) of molecule 0; molecule 1 has one
    assert rep.pairs[:3].tolist() == [[0, 1], [0, 2], [1, 2]] and rep.pairs[3:6].tolist() == [[4, 5], [4, 6], [5, 6]]
    assert ConformerRepulsion.build(templates, [0, 1], [4, 3], **OPTIONS) is None


def test_separation_is_the_mean_squared_difference_of_heavy_atom_distances_and_invariant():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    pairs = _all_pairs(4)  # atom 4 plays a hydrogen: in no pair
    rep = ConformerRepulsion.build([pairs], [0, 0], [5, 5], **OPTIONS)
    da = np.linalg.norm(a.numpy()[pairs[:, 0]] - a.numpy()[pairs[:, 1]], axis=1)
    db = np.linalg.norm(b.numpy()[pairs[:, 0]] - b.numpy()[pairs[:, 1]], axis=1)
    sep = rep.separations(torch.cat([a, b]))
    assert float(sep) == pytest.approx(float(np.mean((da - db) ** 2)))
    moved = b @ _random_rotation(1).T + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(rep.separations(torch.cat([a, moved])), sep)
    assert float(rep.separations(torch.cat([a, a @ _random_rotation(2).T]))) == pytest.approx(0.0, abs=1e-20)
    moved_h = b.clone()
    moved_h[4] += 5.0  # a hydrogen does not count
    torch.testing.assert_close(rep.separations(torch.cat([a, moved_h])), sep)


def test_descending_the_energy_pushes_conformers_apart():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    pos = torch.cat([a, a + 0.05 * torch.randn(6, 3, generator=gen, dtype=torch.float64)])
    rep = ConformerRepulsion.build([_all_pairs(6)], [0, 0], [6, 6], **OPTIONS)
    before = float(rep.separations(pos))
    for _ in range(20):
        pos = pos.requires_grad_(True)
        (grad,) = torch.autograd.grad(rep(pos), pos)
        pos = (pos - 0.1 * grad).detach()
    assert float(rep.separations(pos)) > before + 0.01


def test_acts_only_inside_its_sigma_range_and_rejects_bad_options():
    rep = ConformerRepulsion.build([_all_pairs(2)], [0, 0], [2, 2], **OPTIONS)
    x = torch.zeros(4, 3)
    assert rep.bind(x, 1.0) is rep and rep.bind(x, 0.1) is None and rep.bind(x, 20.0) is None
    assert particle_guidance_options({"weight": 2.0})["weight"] == 2.0
    for bad in ({"strength": 1.0}, {"weight": -1.0}, {"bandwidth": 0.0}):
        with pytest.raises(ValueError):
            particle_guidance_options(bad)


def test_guided_sampling_spreads_the_conformers_of_a_flexible_molecule():
    from molediff.chem.model import load_conformer_model

    shipped_model = load_conformer_model()
    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCCO"))
    pairs = torsion_pairs(mol)

    def spread(coords):
        d = np.linalg.norm(coords[:, pairs[:, 0]] - coords[:, pairs[:, 1]], axis=-1)
        return np.mean([np.mean((d[i] - d[j]) ** 2) for i in range(len(d)) for j in range(i + 1, len(d))])

    plain = shipped_model.sample([mol], 6, seed=0, steps=10)[0]
    repelled = shipped_model.sample([mol], 6, seed=0, steps=10, particle_guidance={"weight": 3.0})[0]
    assert np.isfinite(repelled).all() and spread(repelled) > 1.5 * spread(plain)
    again = shipped_model.sample([mol], 6, seed=0, steps=10, particle_guidance={"weight": 3.0})[0]
    np.testing.assert_array_equal(again, repelled)
