"""Closed-form gradients of the stereo-guidance penalty against autograd, term by term and together."""

import dataclasses

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.penalty_gradients import (accumulate_rows, chirality_cosine_gradients,
                                             dihedral_cosine_gradients, distance_bound_gradients, gather_rows,
                                             volume_gradients)
from molediff.chem.stereo_guidance import (CHIRALITY_TERMS, GuidanceConstraints, chirality_cosines,
                                           dihedral_cosines, guidance_constraints, guidance_penalty,
                                           signed_volumes)
from molediff.core.guidance import PenaltyGuidance

# chiral centres, an inverted-capable cage (QM9 37121), bridgeheads, E/Z and aromatic rings
SMILES = ["C[C@H](N)C(=O)O", "C1C[C@]23C[C@]2(O1)[C@H]1O[C@H]13", "C1C[C@H]2CC[C@@H]1C2", "C/C=C/C(=O)O",
          "c1ccccc1O", "N[C@@H](CO)[C@H](C)O"]


def _autograd(fn, pos):
    pos = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(pos), pos)
    return grad


def _batch():
    """Distance-geometry coordinates of the molecules (float64) and their constraints as one batch."""
    mols, coords = [], []
    for smiles in SMILES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        # random starting coordinates and no chirality enforcement: the cage does not embed otherwise
        assert AllChem.EmbedMolecule(mol, randomSeed=3, useRandomCoords=True, enforceChirality=False) == 0
        mols.append(mol)
        coords.append(torch.tensor(mol.GetConformer().GetPositions()))
    cons = GuidanceConstraints.concat([guidance_constraints(m) for m in mols], [m.GetNumAtoms() for m in mols])
    return torch.cat(coords), cons


def _only(cons, term):
    """``cons`` with every constraint but ``term``'s removed."""
    groups = {"centres": ("centres", "quads", "signs", "invertible"), "planar": ("planar", "planar_sign"),
              "pairs": ("pairs", "lower", "upper"), "hull": ("hull", "hull_quads", "hull_signs")}
    empty = {name: getattr(cons, name)[:0] for other, names in groups.items() if other != term for name in names}
    return dataclasses.replace(cons, **empty)


def test_geometric_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(50, 4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(50, generator=g, dtype=torch.float64)
    flat, quads = v.reshape(-1, 3), torch.arange(200).reshape(50, 4)
    volume, dvolume = volume_gradients(v)
    torch.testing.assert_close(volume, signed_volumes(flat, quads))
    by_volume = _autograd(lambda p: (w * signed_volumes(p, quads)).sum(), flat)
    torch.testing.assert_close((w[:, None, None] * dvolume).reshape(-1, 3), by_volume)
    cosine, dcosine = chirality_cosine_gradients(v[:, 0], v[:, 1:])
    ref = lambda p: (w * chirality_cosines(p, quads[:, 0], quads[:, 1:])).sum()  # noqa: E731
    torch.testing.assert_close(cosine, chirality_cosines(flat, quads[:, 0], quads[:, 1:]))
    torch.testing.assert_close((w[:, None, None] * dcosine).reshape(-1, 3), _autograd(ref, flat))
    cosine, dcosine = dihedral_cosine_gradients(v)
    torch.testing.assert_close(cosine, dihedral_cosines(flat, quads))
    by_dihedral = _autograd(lambda p: (w * dihedral_cosines(p, quads)).sum(), flat)
    torch.testing.assert_close((w[:, None, None] * dcosine).reshape(-1, 3), by_dihedral)


def test_degenerate_geometry_gives_autograd_zero_not_nan():
    """Coincident points (zero normals and vectors) give the zero gradient autograd gives, never NaN."""
    v = torch.zeros(1, 4, 3, dtype=torch.float64)
    for fn in (chirality_cosine_gradients, dihedral_cosine_gradients):
        args = (v[:, 0], v[:, 1:]) if fn is chirality_cosine_gradients else (v,)
        value, grad = fn(*args)
        assert torch.isfinite(value).all() and torch.equal(grad, torch.zeros_like(grad))


def test_distance_gradients_are_the_same_compacted_or_not():
    pos, cons = _batch()
    x = pos + 0.2 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(3), dtype=pos.dtype)
    full, compact = (accumulate_rows(len(x), distance_bound_gradients(x, cons.pairs, cons.lower, cons.upper, 1.5,
                                                                      compact=flag), x) for flag in (False, True))
    assert full.abs().max() > 1e-2
    torch.testing.assert_close(compact, full, rtol=1e-12, atol=1e-12)


def test_rows_are_accumulated_where_indices_repeat():
    index = torch.tensor([[0, 2], [2, 1]])
    grad = torch.arange(12, dtype=torch.float64).reshape(2, 2, 3)
    out = accumulate_rows(4, [(index, grad), (index[:0], grad[:0])], grad)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1, 2], [9, 10, 11], [9, 11, 13], [0, 0, 0]],
                                                 dtype=torch.float64))
    torch.testing.assert_close(gather_rows(out, index), out[index])


@pytest.mark.parametrize("term", ["centres", "planar", "pairs", "hull"])
@pytest.mark.parametrize("noise", [0.05, 0.4])
def test_each_penalty_term_matches_autograd(term, noise):
    pos, cons = _batch()
    cons = _only(cons, term)
    if term in ("centres", "planar"):  # the mirror image breaks every centre; noise bends the flat dihedrals
        pos, noise = -pos, max(noise, 0.4)
    x = pos + noise * torch.randn(pos.shape, generator=torch.Generator().manual_seed(1), dtype=pos.dtype)
    for chirality in CHIRALITY_TERMS if term == "centres" else ("shape",):
        penalty = guidance_penalty(cons, chirality=chirality).bind(pos, 0.5)  # hull held (σ <= 1)
        expected = _autograd(penalty, x)
        assert expected.abs().max() > 1e-3, "the term must be active for the comparison to mean anything"
        torch.testing.assert_close(penalty.gradient(x), expected, rtol=1e-9, atol=1e-9)


def test_whole_penalty_gradient_matches_autograd_bound_and_unbound():
    pos, cons = _batch()
    x = pos + 0.3 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(2), dtype=pos.dtype)
    for penalty in (guidance_penalty(cons), guidance_penalty(cons).bind(x, 0.3), guidance_penalty(cons).bind(x, 3.0),
                    guidance_penalty(cons, distance_weight=0.0, hull_margin=None)):
        torch.testing.assert_close(penalty.gradient(x), _autograd(penalty, x), rtol=1e-9, atol=1e-9)


class _AutogradOnly:
    """The same penalty without its closed-form gradient (PenaltyGuidance falls back to autograd)."""

    def __init__(self, penalty):
        self.penalty = penalty

    def bind(self, x0, sigma=None):
        return _AutogradOnly(self.penalty.bind(x0, sigma))

    def __call__(self, pos):
        return self.penalty(pos)


def test_guidance_with_the_closed_form_follows_the_autograd_path():
    pos, cons = _batch()
    noisy = pos + 0.5 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(4), dtype=pos.dtype)
    identity = lambda x, sigma: x  # noqa: E731
    penalty = guidance_penalty(cons)
    closed = PenaltyGuidance(identity, penalty, iters=30, step_size=0.3, max_move=0.3)
    auto = PenaltyGuidance(identity, _AutogradOnly(penalty), iters=30, step_size=0.3, max_move=0.3)
    sigma = torch.tensor(0.5, dtype=pos.dtype)
    out = closed(noisy, sigma)
    torch.testing.assert_close(out, auto(noisy, sigma), rtol=1e-7, atol=1e-7)
    assert float(penalty(out)) < 0.1 * float(penalty(noisy))
