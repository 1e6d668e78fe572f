"""Per-conformer seeds: a digest of the featurised molecule, the call's seed and the conformer number."""

import pytest
import torch
from rdkit import Chem

from molediff.chem.conformer_noise import conformer_noise, graph_digest, molecule_key
from molediff.chem.featurize import featurize


def _graph(smiles: str):
    return featurize(Chem.AddHs(Chem.MolFromSmiles(smiles)))


def test_the_digest_is_stable_and_tells_molecules_and_atom_orders_apart():
    assert graph_digest(_graph("CCO")) == graph_digest(_graph("CCO"))
    assert graph_digest(_graph("CCO")) == graph_digest(_graph("[CH3][CH2][OH]"))  # the same graph
    digests = {graph_digest(_graph(s)) for s in ("CCO", "OCC", "CCN", "COC", "C=CO", "CC[O-]")}
    assert len(digests) == 6  # OCC numbers its atoms differently from CCO
    assert 0 <= graph_digest(_graph("CCO")) < 2**128


def test_keys_differ_by_call_seed_and_molecule_and_conformers_are_streams():
    d1, d2 = graph_digest(_graph("CCO")), graph_digest(_graph("CCN"))
    keys = {molecule_key(s, d) for s in (0, 1, 2**40) for d in (d1, d2)}
    assert len(keys) == 6 and all(0 <= k < 2**64 for k in keys)
    assert molecule_key(3, d1) == molecule_key(3, d1)
    with pytest.raises(ValueError):
        molecule_key(-1, d1)
    noise = conformer_noise(3, [d1, d1, d2], [0, 1, 0], [2, 2, 2]).normal((6, 3))
    alone = conformer_noise(3, [d1], [1], [2]).normal((2, 3))
    torch.testing.assert_close(noise[2:4], alone, rtol=0, atol=0)  # conformer 1 of CCO, wherever it sits
    assert not torch.equal(noise[0:2], noise[2:4])


def test_conformer_noise_checks_its_lengths():
    noise = conformer_noise(0, [1, 2], [0, 0], [3, 4])
    assert noise.normal((7, 3)).shape == (7, 3)
    with pytest.raises(ValueError):
        conformer_noise(0, [1, 2], [0], [3, 4])
    with pytest.raises(ValueError):
        conformer_noise(0, [1], [-1], [3])
