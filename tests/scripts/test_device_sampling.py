"""benchmarks/device_sampling.py: constraints survive the file round trip; conformer jobs are chunked in order."""

from __future__ import annotations

from dataclasses import fields

import torch
from rdkit import Chem

from molediff.chem.stereo_guidance import GuidanceConstraints, guidance_constraints
from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/device_sampling.py", "molediff_device_sampling")


def test_constraints_round_trip_per_molecule(tmp_path):
    bench = _module()
    smiles = ["C[C@H](N)C(=O)O", r"C/C=C/C", "C", "C1CC2CC1C2"]
    parts = [guidance_constraints(Chem.AddHs(Chem.MolFromSmiles(s))) for s in smiles]
    bench.save_constraints(parts, tmp_path / "c.safetensors", {"n": len(parts)})
    loaded = bench.load_constraints(tmp_path / "c.safetensors")
    assert len(loaded) == len(parts)
    for a, b in zip(parts, loaded):
        for f in fields(GuidanceConstraints):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
    # one molecule specifies a centre, one a double bond: the round trip is not vacuous
    assert loaded[0].centres.numel() == 1 and (loaded[1].planar_sign != 0).any()


def test_conformer_chunks_cover_every_job_in_order_within_the_atom_budget():
    bench = _module()
    num_nodes = torch.tensor([5, 12, 3, 30])
    chunks = bench.conformer_chunks(num_nodes, k=3, max_atoms=25)
    assert torch.equal(torch.cat(chunks), torch.arange(4).repeat_interleave(3))
    for chunk in chunks:
        atoms = int(num_nodes[chunk].sum())
        assert atoms <= 25 or chunk.numel() == 1  # a molecule larger than the budget runs alone
    assert [c.numel() for c in chunks][-3:] == [1, 1, 1]
