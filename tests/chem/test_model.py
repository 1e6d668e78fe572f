"""The conformer model: denoiser contract, sampling protocol, persistence, training task."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from molediff.chem.errors import UnsupportedElementError
from molediff.chem.featurize import EDGE_FEATURE_DIM, NODE_FEATURE_DIM, featurize
from molediff.chem.model import ConformerModel, ConformerModelConfig, load_conformer_model
from molediff.chem.training_task import graph_loss
from molediff.core.losses import edm_loss
from molediff.data.packed import PackedGraphs

torch.set_num_threads(1)


def tiny_config(**kw) -> ConformerModelConfig:
    net = dict(node_dim=NODE_FEATURE_DIM, edge_dim=EDGE_FEATURE_DIM, hidden=16, num_layers=2, fully_connected=True)
    return ConformerModelConfig(network="egnn", network_kwargs=net, default_steps=4, **kw)


def mol(smiles: str) -> Chem.Mol:
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def test_sample_shapes_zero_com_and_seeded():
    model = ConformerModel(tiny_config())
    mols = [mol("CCO"), mol("c1ccccc1")]
    a = model.sample(mols, 3, seed=7)
    b = model.sample(mols, 3, seed=7)
    assert [x.shape for x in a] == [(3, 9, 3), (3, 12, 3)]
    for x, y in zip(a, b):
        assert np.isfinite(x).all() and np.array_equal(x, y)
        assert np.abs(x.mean(axis=1)).max() < 1e-4  # zero centre of mass per conformer
    c = model.sample(mols, 3, seed=8)
    assert not np.allclose(a[0], c[0])


def test_a_molecules_conformers_do_not_depend_on_its_batch_mates_position_or_batch_size():
    """Per-conformer noise streams: alone, among others, reversed, or split over small batches, the same draw."""
    model = ConformerModel(tiny_config(default_sampler="ddpm"))  # stochastic: noise at every step
    mols = [mol("CCO"), mol("c1ccccc1"), mol("CC(=O)N"), mol("OCC#N")]
    together = model.sample(mols, 3, seed=5, precision="fp32")
    reversed_small = model.sample(mols[::-1], 3, seed=5, precision="fp32", max_atoms_per_batch=20)[::-1]
    for m, a, b in zip(mols, together, reversed_small):
        alone = model.sample([m], 3, seed=5, precision="fp32")[0]
        np.testing.assert_allclose(alone, a, atol=1e-4)  # fp32 batched arithmetic may round differently
        np.testing.assert_allclose(b, a, atol=1e-4)
    fewer = model.sample(mols[:1], 2, seed=5, precision="fp32")[0]
    np.testing.assert_allclose(fewer, together[0][:2], atol=1e-4)  # conformer k does not depend on num_confs
    assert not np.allclose(together[0][0], together[0][1], atol=1e-2)  # conformers of a molecule differ
    with pytest.raises(ValueError, match="seed"):
        model.sample(mols[:1], 1, seed=-1)


def test_sample_without_seed_follows_the_global_torch_seed():
    model = ConformerModel(tiny_config())
    mols = [mol("CCO")]
    torch.manual_seed(0)
    a = model.sample(mols, 2, stereo_guidance=False)
    after_a = torch.rand(3)
    torch.manual_seed(0)
    b = model.sample(mols, 2, stereo_guidance=False)
    after_b = torch.rand(3)
    assert np.array_equal(a[0], b[0])  # seed=None is reproducible from torch.manual_seed
    assert torch.equal(after_a, after_b)  # the global stream is advanced, not reseeded
    torch.manual_seed(0)
    torch.randint(0, 2**62, ())  # what seed=None consumes from the global generator
    assert torch.equal(after_a, torch.rand(3))


def test_sample_chunks_by_atom_budget_give_same_shapes():
    model = ConformerModel(tiny_config())
    out = model.sample([mol("CCO")], 5, seed=0, max_atoms_per_batch=10)
    assert out[0].shape == (5, 9, 3) and np.isfinite(out[0]).all()



def test_refining_starting_conformers_keeps_them_at_low_sigma_and_moves_them_at_high():
    from rdkit.Chem import AllChem

    model = ConformerModel(tiny_config())
    m = mol("CCCO")
    AllChem.EmbedMultipleConfs(m, 2, randomSeed=1)
    starts = np.stack([m.GetConformer(c).GetPositions() for c in range(2)])
    centred = starts - starts.mean(axis=1, keepdims=True)
    low = model.sample([m], 3, seed=0, init_conformers=[starts], sigma_start=0.01, stereo_guidance=False)[0]
    # conformer k starts from start k mod 2, and barely moves at sigma 0.01
    for k, ref in enumerate([0, 1, 0]):
        assert np.sqrt(((low[k] - centred[ref]) ** 2).sum(-1).mean()) < 0.1
    high = model.sample([m], 3, seed=0, init_conformers=[starts], sigma_start=5.0, stereo_guidance=False)[0]
    assert np.sqrt(((high[0] - centred[0]) ** 2).sum(-1).mean()) > 0.3
    again = model.sample([m], 3, seed=0, init_conformers=[starts], sigma_start=5.0, stereo_guidance=False)[0]
    assert np.array_equal(high, again)


def test_refining_rejects_bad_starting_conformers():
    model = ConformerModel(tiny_config())
    m = mol("CCO")
    good = np.zeros((1, 9, 3))
    with pytest.raises(ValueError, match="init_conformers\\[0\\]"):
        model.sample([m], 1, init_conformers=[np.zeros((1, 8, 3))], sigma_start=0.5)
    with pytest.raises(ValueError, match="entries"):
        model.sample([m, m], 1, init_conformers=[good], sigma_start=0.5)
    with pytest.raises(ValueError, match="go together"):
        model.sample([m], 1, init_conformers=[good])
    with pytest.raises(ValueError, match="finite"):
        model.sample([m], 1, init_conformers=[np.full((1, 9, 3), np.nan)], sigma_start=0.5)
    with pytest.raises(ValueError, match="sigma_start must exceed"):
        model.sample([m], 1, init_conformers=[good], sigma_start=0.0)


def test_precision_choice_and_bf16_sampling_close_to_fp32():
    model = ConformerModel(tiny_config())
    assert model.resolved_precision("fp32") == "fp32" and model.resolved_precision("bf16") == "bf16"
    assert model.resolved_precision("auto") in ("fp32", "bf16")
    gfn = ConformerModel(ConformerModelConfig(network="gfn", network_kwargs=dict(
        node_dim=NODE_FEATURE_DIM, edge_dim=EDGE_FEATURE_DIM, hidden=8, num_layers=1)))
    assert gfn.resolved_precision("auto") == "fp32"  # no reduced-precision path: auto never picks bf16
    mols = [mol("CCO"), mol("CC(=O)N")]
    full = model.sample(mols, 2, seed=3, precision="fp32", stereo_guidance=False)
    half = model.sample(mols, 2, seed=3, precision="bf16", stereo_guidance=False)
    for a, b in zip(full, half):
        assert np.isfinite(b).all() and not np.array_equal(a, b)  # bf16 really ran
        assert np.abs(a - b).max() < 0.05  # same noise, nearly the same samples (Å)
    assert model.denoiser.net.edge_dtype is None  # restored after sampling
    with pytest.raises(ValueError, match="unknown precision"):
        model.sample(mols, 1, seed=0, precision="fp8")

def test_unsupported_element_named():
    model = ConformerModel(tiny_config(name="tiny"))
    with pytest.raises(UnsupportedElementError, match="Cl.*tiny"):
        model.check_supported(mol("CCCl"))


def test_unknown_sampler_and_network_rejected():
    with pytest.raises(ValueError, match="unknown network"):
        ConformerModel(ConformerModelConfig(network="nope"))
    model = ConformerModel(tiny_config())
    with pytest.raises(ValueError, match="unknown sampler"):
        model.sample([mol("C")], 1, sampler="nope")


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown conformer-model config keys"):
        ConformerModelConfig.from_dict({"netwrk": "egnn"})


def test_save_and_load_round_trip_without_pickle(tmp_path, monkeypatch):
    model = ConformerModel(tiny_config())
    model.save_pretrained(tmp_path / "m", card={"step": 3})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load used"))
    loaded = load_conformer_model(tmp_path / "m.json")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = [mol("CC=O")]
    assert np.array_equal(model.sample(x, 2, seed=1)[0], loaded.sample(x, 2, seed=1)[0])


def test_a_model_whose_name_has_a_dot_loads_by_any_of_its_names(tmp_path):
    """``m.v2`` (files ``m.v2.json`` / ``m.v2.safetensors``) was not found by its stem."""
    ConformerModel(tiny_config()).save_pretrained(tmp_path / "m.v2")
    for given in ("m.v2", "m.v2.json", "m.v2.safetensors"):
        assert isinstance(load_conformer_model(tmp_path / given), ConformerModel)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no conformer model"):
        load_conformer_model(tmp_path / "absent")


def test_shipped_models_record_their_weights_checksum():
    import hashlib
    import json
    from pathlib import Path

    import molediff

    weights = Path(molediff.__file__).parent / "weights"
    for meta_path in sorted(weights.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        data = meta_path.with_suffix(".safetensors").read_bytes()
        assert meta["weights_bytes"] == len(data), meta_path.name
        assert meta["weights_sha256"] == hashlib.sha256(data).hexdigest(), meta_path.name


def test_corrupted_or_mismatched_weights_are_a_typed_error_naming_the_file(tmp_path):
    import shutil
    from pathlib import Path

    import molediff
    from molediff.training.export import ExportError

    shipped = Path(molediff.__file__).parent / "weights" / "qm9_egnn"
    for suffix in (".json", ".safetensors"):
        shutil.copy(shipped.with_suffix(suffix), tmp_path / f"m{suffix}")
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a weight: still valid safetensors, wrong numbers
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"m\.safetensors do not match the SHA-256"):
        load_conformer_model(tmp_path / "m.json")
    (tmp_path / "m.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ExportError, match="truncated"):
        load_conformer_model(tmp_path / "m.json")


def test_weights_that_do_not_fit_the_described_network_are_a_typed_error(tmp_path):
    import json
    import shutil

    from molediff.training.export import ExportError

    ConformerModel(tiny_config()).save_pretrained(tmp_path / "a")
    narrow = tiny_config()
    narrow.network_kwargs = {**narrow.network_kwargs, "hidden": 8}
    ConformerModel(narrow).save_pretrained(tmp_path / "b")
    shutil.copy(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    meta = json.loads((tmp_path / "a.json").read_text())
    del meta["weights_sha256"], meta["weights_bytes"]  # an export from before checksums: loads unchecked
    (tmp_path / "a.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=r"a\.safetensors do not fit the network described in a\.json"), \
            pytest.warns(UserWarning, match="records no SHA-256"):
        load_conformer_model(tmp_path / "a.json")


def _packed(smiles):
    from rdkit.Chem import AllChem

    graphs = []
    for s in smiles:
        m = mol(s)
        AllChem.EmbedMolecule(m, randomSeed=0)
        g = featurize(m)
        graphs.append((g.pos, g.node_attr, g.edge_index, g.edge_attr))
    return PackedGraphs.from_graphs(graphs, index=range(len(graphs)))


def test_training_loss_decreases_on_tiny_set():
    store = _packed(["CCO", "CC(=O)N", "C1CC1", "OCC=O"])
    torch.manual_seed(0)
    model = ConformerModel(tiny_config(sigma_data=1.0))
    loss_fn = edm_loss(1.0, -1.0, 1.0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    batch = store.batch(torch.arange(len(store)))
    sigma = torch.full((len(store),), 0.3)

    @torch.no_grad()
    def fixed_loss():
        g = torch.Generator().manual_seed(0)
        return float(graph_loss(model, batch, loss_fn, g, sigma=sigma).mean())

    before = fixed_loss()
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = graph_loss(model, batch, loss_fn, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.6 * before


def test_loss_is_translation_invariant():
    """Data are centred inside the loss: shifting a molecule must not change it."""
    store = _packed(["CCO", "CC"])
    model = ConformerModel(tiny_config())
    b = store.batch(torch.arange(2))
    sigma = torch.tensor([0.5, 0.5])
    l1 = graph_loss(model, b, edm_loss(1.4), torch.Generator().manual_seed(0), sigma=sigma)
    b.pos = b.pos + torch.tensor([5.0, -3.0, 2.0])
    l2 = graph_loss(model, b, edm_loss(1.4), torch.Generator().manual_seed(0), sigma=sigma)
    assert torch.allclose(l1, l2, rtol=1e-4)


def test_bf16_edge_gradients_follow_the_fp32_ones():
    """Mixed-precision training (training.precision: bf16) backpropagates through the bf16 edge MLPs."""
    from molediff.nn.precision import edge_precision

    store = _packed(["CCO", "CC(=O)N", "C1CC1", "OCC=O"])
    torch.manual_seed(0)
    model = ConformerModel(tiny_config(sigma_data=1.0))
    loss_fn = edm_loss(1.0, -1.0, 1.0)
    batch = store.batch(torch.arange(len(store)))
    grads = []
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with edge_precision(model, precision):
            graph_loss(model, batch, loss_fn, torch.Generator().manual_seed(0)).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert 0.99 < cosine < 1.0, cosine  # close, and not silently the fp32 computation


def test_sampler_options_reach_the_sampler():
    model = ConformerModel(tiny_config())
    mols = [mol("CCO")]
    plain = model.sample(mols, 2, sampler="heun", steps=3, seed=0, stereo_guidance=False)
    churned = model.sample(mols, 2, sampler="heun", steps=3, seed=0, stereo_guidance=False,
                           sampler_options={"churn": 30.0})
    assert not np.allclose(plain[0], churned[0])  # churn adds noise: the option was used
    with pytest.raises(TypeError):
        model.sample(mols, 1, sampler="heun", steps=2, seed=0, sampler_options={"no_such_option": 1})


def test_default_batch_atoms_by_device():
    from molediff.chem.model import default_batch_atoms

    assert default_batch_atoms("cpu") == 20_000 and default_batch_atoms("cuda") == 200_000


def test_out_of_memory_batches_are_retried_in_halves(monkeypatch):
    model = ConformerModel(tiny_config())
    real = model.sample_graphs
    seen = []

    def limited(cond, **kw):  # a device that holds at most 20 atoms per batch
        atoms = cond["batch"].numel()
        seen.append(atoms)
        if atoms > 20:
            raise torch.OutOfMemoryError("simulated")
        return real(cond, **kw)

    monkeypatch.setattr(model, "sample_graphs", limited)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        out = model.sample([mol("CCO"), mol("CCCO")], 4, seed=0, max_atoms_per_batch=100)
    assert [o.shape for o in out] == [(4, 9, 3), (4, 12, 3)]
    assert all(np.isfinite(o).all() for o in out)
    assert seen[0] > 20 and max(seen[-3:]) <= 20  # first try too big; the rest fit after halving
    monkeypatch.setattr(model, "sample_graphs", lambda cond, **kw: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError):  # a single conformer that does not fit is the caller's problem
        model.sample([mol("CCO")], 1, seed=0)
