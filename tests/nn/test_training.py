"""Tiny training: each network, EDM-preconditioned, learns a few ASE G2 molecules (DSM loss clearly decreases)."""

from __future__ import annotations

import pytest
import torch

from molediff.core.denoiser import EDMPrecond
from molediff.core.losses import edm_loss
from molediff.core.spaces import CenteredSpace
from molediff.nn.egnn import EGNN
from molediff.nn.gfn import GraphFieldNetwork
from molediff.nn.tensor_field import TensorFieldNetwork

MOLECULES = ["CH4", "NH3", "H2O", "C2H4"]
ELEMENTS = {"H": 0, "C": 1, "N": 2, "O": 3}
COPIES = 4  # each molecule appears this many times per batch (with independent noise)


def _g2_batch():
    from ase.collections import g2

    pos, types, batch = [], [], []
    for k in range(COPIES):
        for m, name in enumerate(MOLECULES):
            atoms = g2[name]
            p = torch.as_tensor(atoms.get_positions(), dtype=torch.float32)
            pos.append(p - p.mean(0))
            types += [ELEMENTS[s] for s in atoms.get_chemical_symbols()]
            batch += [k * len(MOLECULES) + m] * len(atoms)
    node_attr = torch.nn.functional.one_hot(torch.tensor(types), len(ELEMENTS)).float()
    return torch.cat(pos), node_attr, torch.tensor(batch)


NETS = {
    "egnn": lambda: EGNN(4, 0, hidden=32, num_layers=3, fully_connected=True),
    "gfn": lambda: GraphFieldNetwork(4, 0, hidden=32, num_layers=3, fully_connected=True),
    "tfn": lambda: TensorFieldNetwork(4, 0, hidden=16, num_layers=2, lmax=1, radial_hidden=16, fully_connected=True),
}


def _eval_loss(loss_fn, denoiser, x0, space, cond) -> float:
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(loss_fn(denoiser, x0, space=space, generator=g, **cond).item() for _ in range(8)) / 8


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids oversubscription on shared CI machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", ["egnn", "gfn", "tfn"])
def test_networks_learn_g2_molecules(name, one_thread):
    torch.manual_seed(0)
    x0, node_attr, batch = _g2_batch()
    space = CenteredSpace(batch)
    cond = {"node_attr": node_attr, "batch": batch}
    denoiser = EDMPrecond(NETS[name](), sigma_data=1.0)
    loss_fn = edm_loss(sigma_data=1.0)
    before = _eval_loss(loss_fn, denoiser, x0, space, cond)
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = loss_fn(denoiser, x0, space=space, generator=g, **cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _eval_loss(loss_fn, denoiser, x0, space, cond)
    assert after < 0.7 * before, (before, after)
