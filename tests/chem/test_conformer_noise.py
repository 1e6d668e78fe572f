"""Per-conformer seeds: a digest of the featurised molecule, the call's seed and the conformer number."""

import pytest
from rdkit import Chem

from molediff.chem.conformer_noise import conformer_noise, conformer_seed, graph_digest
from molediff.chem.featurize import featurize


def _graph(smiles: str):
    return featurize(Chem.AddHs(Chem.MolFromSmiles(smiles)))


def test_the_digest_is_stable_and_tells_molecules_and_atom_orders_apart():
    assert graph_digest(_graph("CCO")) == graph_digest(_graph("CCO"))
    assert graph_digest(_graph("CCO")) == graph_digest(_graph("[CH3][CH2][OH]"))  # the same graph
    digests = {graph_digest(_graph(s)) for s in ("CCO", "OCC", "CCN", "COC", "C=CO", "CC[O-]")}
    assert len(digests) == 6  # OCC numbers its atoms differently from CCO
    assert 0 <= graph_digest(_graph("CCO")) < 2**128


def test_seeds_differ_by_call_seed_molecule_and_conformer_number():
    d1, d2 = graph_digest(_graph("CCO")), graph_digest(_graph("CCN"))
    seeds = {conformer_seed(s, d, k) for s in (0, 1, 2**40) for d in (d1, d2) for k in range(4)}
    assert len(seeds) == 24 and all(0 <= s < 2**64 for s in seeds)
    assert conformer_seed(3, d1, 2) == conformer_seed(3, d1, 2)
    with pytest.raises(ValueError):
        conformer_seed(-1, d1, 0)


def test_conformer_noise_checks_its_lengths():
    noise = conformer_noise(0, [1, 2], [0, 0], [3, 4])
    assert noise.normal((7, 3)).shape == (7, 3)
    with pytest.raises(ValueError):
        conformer_noise(0, [1, 2], [0], [3, 4])
