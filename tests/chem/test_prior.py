"""The conformer model's noise prior: bonds of the extended graph, isotropic vs harmonic noise, wiring."""

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.featurize import EDGE_FEATURE_DIM, NODE_FEATURE_DIM, collate, featurize
from molediff.chem.model import ConformerModel, ConformerModelConfig, load_conformer_model
from molediff.chem.prior import PRIORS, bond_edge_index, noise_space
from molediff.chem.training_task import graph_loss
from molediff.core.losses import edm_loss
from molediff.core.spaces import CenteredSpace, HarmonicSpace
from molediff.data.packed import PackedGraphs

torch.set_num_threads(1)

#: QM9-sized molecules (9 heavy atoms at most), the sizes the harmonic stiffness is calibrated on
QM9_LIKE = ["CC(C)CC(=O)NC", "OC1CCOC1C#N", "c1cc(F)ccc1O", "CC(C)(C)C(O)C=O", "N#CC1=CNC=C1", "CCOC(=O)C(C)O"]


def _batch(smiles, with_pos: bool = False):
    graphs = []
    for s in smiles:
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        if with_pos:
            AllChem.EmbedMolecule(m, randomSeed=0)
        graphs.append(featurize(m))
    return graphs, collate(graphs)


def _config(prior: str) -> ConformerModelConfig:
    net = dict(node_dim=NODE_FEATURE_DIM, edge_dim=EDGE_FEATURE_DIM, hidden=16, num_layers=2, fully_connected=True)
    return ConformerModelConfig(network="egnn", network_kwargs=net, default_steps=4, prior=prior)


def test_bond_edges_are_the_covalent_bonds_both_directions():
    graphs, b = _batch(["CC(=O)Nc1ccccc1"])
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccccc1"))
    bonds = bond_edge_index(b.edge_index, b.edge_attr)
    assert bonds.shape[1] == 2 * mol.GetNumBonds() < b.edge_index.shape[1]  # 2-/3-hop pairs left out
    expected = {(bd.GetBeginAtomIdx(), bd.GetEndAtomIdx()) for bd in mol.GetBonds()}
    expected |= {(j, i) for i, j in expected}
    assert set(map(tuple, bonds.T.tolist())) == expected
    assert torch.equal(bonds, graphs[0].bond_edge_index)
    with pytest.raises(ValueError, match="edge_attr"):
        bond_edge_index(b.edge_index, b.edge_attr[:-1])


def test_noise_space_kinds():
    _, b = _batch(["CCO", "C1CC1"])
    centred = noise_space("centered", b.batch, b.edge_index, b.edge_attr)
    harmonic = noise_space("harmonic", b.batch, b.edge_index, b.edge_attr)
    assert type(centred) is CenteredSpace and isinstance(harmonic, HarmonicSpace)
    assert centred.num_graphs == harmonic.num_graphs == 2
    assert set(PRIORS) == {"centered", "harmonic"}
    with pytest.raises(ValueError, match="unknown prior 'gaussian'"):
        noise_space("gaussian", b.batch, b.edge_index, b.edge_attr)


def test_harmonic_noise_is_centred_calibrated_and_keeps_bonded_atoms_close():
    _, b = _batch(QM9_LIKE)
    space = noise_space("harmonic", b.batch, b.edge_index, b.edge_attr)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([space.randn((b.batch.numel(), 3), generator=g) for _ in range(400)])  # [S, N, 3]
    for k in range(b.num_graphs):  # zero centre of mass per molecule, every draw
        assert draws[:, b.batch == k].mean(1).abs().max() < 1e-5
    # calibration (module docstring): about unit variance per coordinate on QM9-sized molecules
    assert 0.8 < float(draws.square().mean()) < 1.2
    bonds = bond_edge_index(b.edge_index, b.edge_attr)
    bonded_ms = float((draws[:, bonds[0]] - draws[:, bonds[1]]).square().sum(-1).mean())
    assert bonded_ms < 0.5 * 6.0  # isotropic unit noise gives 2 * 3 = 6 Å² for any pair
    iso = noise_space("centered", b.batch, b.edge_index, b.edge_attr)
    iso_draws = torch.stack([iso.randn((b.batch.numel(), 3), generator=g) for _ in range(400)])
    iso_ms = float((iso_draws[:, bonds[0]] - iso_draws[:, bonds[1]]).square().sum(-1).mean())
    assert abs(iso_ms - 6.0 * (1 - 1 / 18)) < 0.6  # the centring correlates a pair only weakly


def test_harmonic_prior_density_is_rotation_and_translation_invariant():
    _, b = _batch(["OC1CCOC1C#N"])
    space = noise_space("harmonic", b.batch, b.edge_index, b.edge_attr)
    x = space.randn((b.batch.numel(), 3), generator=torch.Generator().manual_seed(1))
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
    rot = q * torch.sign(torch.linalg.det(q))
    lp = space.log_prior(x, 1.0)
    assert torch.allclose(space.log_prior(x @ rot.T, 1.0), lp, atol=1e-4)
    assert torch.allclose(space.log_prior(space.project(x + torch.tensor([3.0, -1.0, 2.0])), 1.0), lp, atol=1e-4)


@pytest.mark.parametrize("prior", PRIORS)
def test_training_noise_is_drawn_in_the_models_prior(prior):
    graphs, _ = _batch(["CC(=O)N", "OCC=O"], with_pos=True)
    store = PackedGraphs.from_graphs([(g.pos, g.node_attr, g.edge_index, g.edge_attr) for g in graphs],
                                     index=range(len(graphs)))
    batch = store.batch(torch.arange(len(store)))
    model = ConformerModel(_config(prior))
    seen = []
    inner_forward = model.denoiser.forward
    model.denoiser.forward = lambda x, sigma, **cond: seen.append(x.clone()) or inner_forward(x, sigma, **cond)
    sigma = torch.full((batch.num_graphs,), 0.7)
    graph_loss(model, batch, edm_loss(1.4), torch.Generator().manual_seed(5), sigma=sigma)
    space = model.noise_space(batch.batch, batch.edge_index, batch.edge_attr, batch.num_graphs)
    assert isinstance(space, HarmonicSpace) == (prior == "harmonic")
    x0 = space.project(batch.pos)
    expected = space.randn_like(x0, torch.Generator().manual_seed(5))
    assert torch.allclose((seen[0] - x0) / 0.7, expected, atol=1e-5)


@pytest.mark.parametrize("prior", PRIORS)
def test_sampling_starts_from_the_models_prior(prior):
    _, b = _batch(["CC(=O)N", "c1ccoc1"])
    model = ConformerModel(_config(prior)).eval()
    seen = []
    inner_forward = model.denoiser.forward
    model.denoiser.forward = lambda x, sigma, **cond: seen.append(x.clone()) or inner_forward(x, sigma, **cond)
    cond = {"node_attr": b.node_attr, "edge_index": b.edge_index, "edge_attr": b.edge_attr, "batch": b.batch}
    out = model.sample_graphs(cond, sampler="ddpm", steps=4, generator=torch.Generator().manual_seed(3))
    assert out.shape == (b.batch.numel(), 3) and torch.isfinite(out).all()
    space = model.noise_space(b.batch, b.edge_index, b.edge_attr)
    start = space.randn((b.batch.numel(), 3), generator=torch.Generator().manual_seed(3)) * model.sigmas(4)[0]
    assert torch.allclose(seen[0], start, atol=1e-4)


def test_harmonic_prior_round_trips_through_saved_models(tmp_path):
    model = ConformerModel(_config("harmonic"))
    model.config.prior_stiffness = 0.9
    path = model.save_pretrained(tmp_path / "m")
    loaded = load_conformer_model(path)
    assert loaded.config.prior == "harmonic" and math.isclose(loaded.config.prior_stiffness, 0.9)
    mols = [Chem.AddHs(Chem.MolFromSmiles("CC(=O)N"))]
    a, c = model.sample(mols, 2, seed=0), loaded.sample(mols, 2, seed=0)
    assert np.allclose(a[0], c[0], atol=1e-5)
    # models saved before the option existed load with the isotropic prior
    assert ConformerModelConfig.from_dict({"network": "egnn"}).prior == "centered"
    with pytest.raises(ValueError, match="unknown prior"):
        ConformerModelConfig.from_dict({"prior": "harmonik"})
