"""Tests of molediff.chem.evaluation, its checkpoint loader and ``molediff evaluate`` (fast, no QM9 needed)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molediff.chem import checkpoint_loading as cl
from molediff.chem.evaluation import (EvalMolecule, EvaluationRow, aggregate, evaluate, run_etkdg,
                                      score_molecule, select_molecules)
from molediff.chem.model import ConformerModel, ConformerModelConfig
from molediff.training.checkpoint import CheckpointError, save_checkpoint

SMILES = ("CCO", "C[C@H](N)C(=O)O", "O=C1CCC1")


@dataclass
class FakeRecord:
    """Stands in for :class:`molediff.data.qm9.QM9Record` (index, smiles, mol with a reference conformer)."""

    index: int
    smiles: str
    mol: Chem.Mol


def _reference(smiles: str, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    assert rdDistGeom.EmbedMolecule(mol, params) == 0
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol)
    return mol


@pytest.fixture(scope="module")
def records() -> list[FakeRecord]:
    return [FakeRecord(10 * i, s, _reference(s)) for i, s in enumerate(SMILES)]


@pytest.fixture(scope="module")
def mols(records) -> list[EvalMolecule]:
    return select_molecules(records)


def _tiny_model(seed: int = 0) -> ConformerModel:
    torch.manual_seed(seed)
    kwargs = {"node_dim": 29, "edge_dim": 10, "hidden": 16, "num_layers": 1, "fully_connected": True}
    return ConformerModel(ConformerModelConfig(network_kwargs=kwargs, default_steps=3)).eval()


def _mirror(mol: Chem.Mol) -> np.ndarray:
    xyz = mol.GetConformer().GetPositions()
    xyz[:, 0] *= -1.0
    return xyz


def test_select_molecules_is_seeded_and_ordered(records):
    a = select_molecules(records, 2, seed=3)
    b = select_molecules(records, 2, seed=3)
    assert [m.index for m in a] == [m.index for m in b]
    assert [m.index for m in a] == sorted(m.index for m in a)
    assert len(select_molecules(records, 99)) == len(records)
    with pytest.raises(ValueError):
        select_molecules(records, 0)


def test_reference_scores_zero_and_mirror_image_is_wrong_but_fixable(mols):
    chiral = mols[1]
    probe = Chem.Mol(chiral.mol)
    conf = Chem.Conformer(probe.GetNumAtoms())
    conf.SetPositions(_mirror(chiral.mol))
    probe.AddConformer(conf, assignId=True)
    score = score_molecule(chiral, probe)
    assert score.num_generated == 2
    assert score.rmsds[0] == pytest.approx(0.0, abs=1e-6)
    assert score.stereo_elements == 1
    assert score.stereo_correct == [True, False]
    assert score.stereo_fixable == [True, True]


def test_aggregate_counts_missing_and_nonfinite(mols):
    good = score_molecule(mols[0], mols[0].mol)
    empty = score_molecule(mols[2], mols[2].template, num_nonfinite=3)
    row = aggregate("model", [good, empty], k=3, seconds=2.0)
    assert isinstance(row, EvaluationRow)
    assert row.no_conformer == 1
    assert row.molecules == 2 and row.conformers == 4
    assert row.coverage_01 == pytest.approx(0.5)  # the empty molecule is a miss
    assert row.mean_min_rmsd == pytest.approx(0.0, abs=1e-6)  # and excluded from the mean
    assert row.valid_fraction == pytest.approx(0.25)
    assert row.conformers_per_s == pytest.approx(2.0)


def test_etkdg_ensembles_are_diverse_and_close(mols):
    coords, seconds = run_etkdg(mols, 4, seed=0)
    assert seconds > 0
    for xyz in coords:
        assert xyz.shape[0] == 4
    # RDKit seeds conformer c with randomSeed * (c + 1): seed 0 would give 4 identical copies
    assert np.ptp(coords[2][:, 0, :], axis=0).max() > 1e-3


def test_evaluate_rows_with_tiny_model(mols):
    rows, per = evaluate(mols, ["model", "model+mmff", "etkdg", "etkdg+mmff"], model=_tiny_model(),
                         k=3, steps=3, seed=0, threads=1)
    assert [r.method for r in rows] == ["model", "model+mmff", "etkdg", "etkdg+mmff"]
    for row in rows:
        assert row.molecules == len(mols) and row.k == 3
        assert row.conformers == 3 * len(mols) and row.conformers_per_s > 0
        assert set(row.as_dict()) >= {"mean_min_rmsd", "median_min_rmsd", "coverage_05", "coverage_025",
                                      "coverage_01", "mean_rmsd", "valid_fraction", "stereo_fraction",
                                      "stereo_fixed_fraction", "no_conformer"}
        assert row.coverage_01 <= row.coverage_025 <= row.coverage_05
        assert row.mean_min_rmsd <= row.mean_rmsd + 1e-12
        assert len(per[row.method]) == len(mols)
    etkdg = {r.method: r for r in rows}
    for name in ("etkdg", "etkdg+mmff"):
        assert etkdg[name].mean_min_rmsd < 0.5
        assert etkdg[name].valid_fraction == 1.0 and etkdg[name].stereo_fraction == 1.0
        assert etkdg[name].no_conformer == 0
    # an untrained network's raw samples are far from any molecule
    assert etkdg["model"].mean_min_rmsd > etkdg["etkdg"].mean_min_rmsd


def test_evaluate_refined_rows_start_from_etkdg(mols):
    rows, _ = evaluate(mols, ["refined", "refined+mmff"], model=_tiny_model(), k=2, seed=0, threads=1)
    assert [r.method for r in rows] == ["refined", "refined+mmff"]
    for row in rows:
        assert row.conformers == 2 * len(mols) and row.no_conformer == 0
    # an untrained network refining from sigma 0.3 Å stays near ETKDG's geometries (the raw model does not)
    assert rows[0].mean_min_rmsd < 0.6


def test_refined_and_mixed_starts_embed_with_the_etkdg_rows_threads(mols, etkdg_thread_counts):
    evaluate(mols, ["mixed", "refined"], model=_tiny_model(), k=2, seed=0, threads=2)
    assert etkdg_thread_counts and set(etkdg_thread_counts) == {2}  # the etkdg row embeds with threads=2; so must the starts it is compared with


def test_evaluate_mixed_rows_draw_half_from_the_prior(mols):
    rows, _ = evaluate(mols, ["refined", "mixed"], model=_tiny_model(), k=2, seed=0, threads=1)
    refined, mixed = rows
    assert mixed.method == "mixed" and mixed.conformers == 2 * len(mols) and mixed.no_conformer == 0
    # the refined half stays near ETKDG; the untrained network's prior half is far off, which the mean over all
    # conformers shows and the minimum does not
    assert mixed.mean_min_rmsd < 0.6
    assert mixed.mean_rmsd > refined.mean_rmsd + 0.3


def test_evaluate_polish_rows_redraw_the_relaxed_conformers(mols):
    methods = ["etkdg+mmff", "etkdg+mmff+polish", "model+mmff+polish", "product+mmff+polish"]
    rows, per = evaluate(mols, methods, model=_tiny_model(), k=2, seed=0, threads=1)
    assert [r.method for r in rows] == methods
    relaxed, polished, model_polished, product = rows
    assert polished.conformers == relaxed.conformers and polished.no_conformer == relaxed.no_conformer == 0
    # an untrained network polishing from 0.1 Å moves ETKDG + MMFF94's conformers a little, not far
    gaps = [abs(a.min_rmsd - b.min_rmsd) for a, b in zip(per["etkdg+mmff"], per["etkdg+mmff+polish"])]
    assert 0.0 < max(gaps) < 0.3
    assert polished.conformers_per_s < relaxed.conformers_per_s  # the polish's time is counted
    assert model_polished.conformers == 2 * len(mols) and product.molecules == len(mols)


def test_evaluate_rejects_bad_requests(mols):
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(mols, ["crest"])
    with pytest.raises(ValueError, match="need a model"):
        evaluate(mols, ["model"])
    with pytest.raises(ValueError, match="need a model"):
        evaluate(mols, ["refined"])
    with pytest.raises(ValueError, match="need a model"):
        evaluate(mols, ["etkdg+mmff+polish"])
    with pytest.raises(ValueError, match="k must be"):
        evaluate(mols, ["etkdg"], k=0)
    seen = []
    with pytest.raises(ValueError, match="draws must be a number >= 1"):  # before the etkdg row runs
        evaluate(mols, ["etkdg", "ranked"], model=_tiny_model(), draws=0.5, log=seen.append)
    assert seen == []


def _fake_checkpoint(directory: Path, step: int, model: ConformerModel, ema: ConformerModel) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.named_parameters()})
    meta = {"step": step, "config": {"task": "conformer", "model": model.config.to_dict()},
            "optimizer": {"param_groups": [], "state": {}}}
    return save_checkpoint(directory / "checkpoints" / f"step_{step:08d}", tensors, meta)


def test_checkpoint_loading_uses_ema_and_newest_step(tmp_path):
    raw, ema = _tiny_model(0), _tiny_model(1)
    _fake_checkpoint(tmp_path, 250, raw, raw)
    path = _fake_checkpoint(tmp_path, 500, raw, ema)
    assert cl.is_trainer_checkpoint(path)
    assert cl.latest_checkpoint(tmp_path) == path
    loaded = cl.load_model_for_evaluation(tmp_path)  # a run folder without model.json
    assert loaded.kind == "checkpoint" and loaded.step == 500
    for name, p in loaded.model.named_parameters():
        torch.testing.assert_close(p, dict(ema.named_parameters())[name])
    raw_loaded = cl.load_checkpoint_model(path, use_ema=False).model
    for name, p in raw_loaded.named_parameters():
        torch.testing.assert_close(p, dict(raw.named_parameters())[name])


def test_checkpoint_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        cl.load_model_for_evaluation(tmp_path)
    model = _tiny_model()
    save_checkpoint(tmp_path / "step_00000001", {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"step": 1, "config": {"task": "conformer", "model": model.config.to_dict()},
                     "optimizer": {}})
    with pytest.raises(CheckpointError, match="no EMA"):
        cl.load_checkpoint_model(tmp_path / "step_00000001.json")


def test_cli_evaluate_etkdg_writes_json_and_csv(tmp_path, records, monkeypatch, capsys):
    import molediff.data.qm9 as qm9
    from molediff.cli import main

    monkeypatch.setattr(qm9, "load_qm9", lambda split: records)
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(["evaluate", "--split", "valid", "-k", "2", "--methods", "etkdg,etkdg+mmff", "--threads", "1",
                 "--quiet", "--out", str(out_json), "--out", str(out_csv)])
    assert code == 0
    text = capsys.readouterr().out
    assert "seed=0" in text and "torch=" in text and "etkdg+mmff" in text
    doc = json.loads(out_json.read_text())
    assert [r["method"] for r in doc["rows"]] == ["etkdg", "etkdg+mmff"]
    assert len(doc["per_molecule"]["etkdg"]) == len(records)
    assert not math.isnan(doc["rows"][0]["mean_min_rmsd"])
    assert out_csv.read_text().splitlines()[0].startswith("method,molecules,k,")
    assert main(["evaluate", "--methods", "etkdg", "--out", str(tmp_path / "r.txt")]) == 2


def test_cli_evaluate_loads_the_model_for_every_model_row(tmp_path, records, monkeypatch):
    import molediff.chem.checkpoint_loading as loading
    import molediff.data.qm9 as qm9
    from molediff.chem.evaluation import METHODS, needs_model
    from molediff.cli import main

    assert [m for m in METHODS if not needs_model(m)] == ["etkdg", "etkdg+mmff"]
    requested = []

    def tiny(path, device=None):
        requested.append(path)
        return loading.LoadedModel(_tiny_model(), tmp_path / "tiny.json", "export", 1)

    monkeypatch.setattr(qm9, "load_qm9", lambda split: records[:2])
    monkeypatch.setattr(loading, "load_model_for_evaluation", tiny)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--split", "valid", "-k", "2", "--methods", "refined,mixed", "--threads", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert requested == [None]
    assert [r["method"] for r in json.loads(out.read_text())["rows"]] == ["refined", "mixed"]


def test_paired_comparison_uses_only_molecules_every_method_embedded():
    from molediff.chem.evaluation import MoleculeScore, paired_comparison

    def scores(values):
        return [MoleculeScore(i, f"m{i}", 2, rmsds=[] if v is None else [v, v + 1.0]) for i, v in enumerate(values)]

    per_molecule = {
        "etkdg": scores([0.1, None, 0.3, 0.05]),  # fails molecule 1: it must drop out of every row
        "model": scores([0.2, 9.0, 0.1, 0.05]),
    }
    rows = {r.method: r for r in paired_comparison(per_molecule, "etkdg")}
    assert rows["model"].molecules == rows["etkdg"].molecules == 3
    assert rows["model"].mean_min_rmsd == pytest.approx((0.2 + 0.1 + 0.05) / 3)
    assert rows["model"].median_min_rmsd == pytest.approx(0.1)
    assert rows["model"].coverage_01 == pytest.approx(1 / 3)  # 0.1 is not < 0.1 (as in the main table)
    assert rows["model"].wins == pytest.approx(1 / 3) and rows["model"].losses == pytest.approx(1 / 3)
    assert rows["etkdg"].wins == 0 and rows["etkdg"].losses == 0
    with pytest.raises(ValueError, match="baseline"):
        paired_comparison(per_molecule, "etkdg+mmff")


def test_paired_and_main_table_coverage_agree_at_the_threshold():
    """The two tables of one report must count a min-RMSD equal to a threshold the same way."""
    from molediff.chem.evaluation import MoleculeScore, paired_comparison

    per = {name: [MoleculeScore(i, f"m{i}", 1, rmsds=[v]) for i, v in enumerate((0.5, 0.25, 0.1, 0.05))]
           for name in ("etkdg", "model")}
    main = aggregate("model", per["model"], 1, 1.0)
    paired = {r.method: r for r in paired_comparison(per, "etkdg")}["model"]
    assert (paired.coverage_05, paired.coverage_025, paired.coverage_01) == \
        (main.coverage_05, main.coverage_025, main.coverage_01) == (0.75, 0.5, 0.25)


def test_benchmark_buckets_molecules_by_heavy_atom_rotors(records, monkeypatch):
    """The benchmark's rotatable-bond table: ethanol's C-O rotation moves a hydrogen only (0 rotors)."""
    import importlib.util

    from molediff.chem.evaluation import MoleculeScore

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "conformers_qm9.py"
    spec = importlib.util.spec_from_file_location("conformers_qm9_bench", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    mols = select_molecules(records)  # CCO, C[C@H](N)C(=O)O, O=C1CCC1: 0, 1 (C-COOH), 0 heavy-atom rotors
    per = {"etkdg": [MoleculeScore(m.index, m.smiles, 1, rmsds=[0.1]) for m in mols]}
    table = bench.by_rotatable_bonds(mols, per)["etkdg"]
    assert [table[b]["molecules"] for b in bench.ROTOR_BUCKETS] == [2, 1, 0, 0, 0]


def test_cli_evaluate_help_lists_every_method():
    import argparse

    from molediff.chem.cli_evaluate import add_arguments
    from molediff.chem.evaluation import METHODS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "methods"]
    listed = action.help.split("(")[0].removeprefix("any of ").replace(",", " ").split()
    assert sorted(listed) == sorted(METHODS)


def test_json_output_is_strict_json_without_nan(tmp_path, mols):
    """A set without stereo molecules has stereo_fraction NaN: the file must still parse as standard JSON."""
    from molediff.chem.cli_evaluate import write_outputs

    rows, per = evaluate(mols[:1], ["etkdg"], k=1)  # ethanol only: no stereo elements
    assert math.isnan(rows[0].stereo_fraction)
    out = tmp_path / "r.json"
    write_outputs([str(out)], rows, {"note": float("inf")}, per)

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    doc = json.loads(out.read_text(), parse_constant=refuse)
    assert doc["rows"][0]["stereo_fraction"] is None and doc["settings"]["note"] is None


def test_cli_evaluate_refuses_an_out_path_that_is_a_folder_before_running(tmp_path, monkeypatch, capsys):
    import molediff.data.qm9 as qm9
    from molediff.cli import main

    def no_data(split):
        raise AssertionError("the evaluation ran before the --out check")

    monkeypatch.setattr(qm9, "load_qm9", no_data)
    folder = tmp_path / "results.json"
    folder.mkdir()
    assert main(["evaluate", "--methods", "etkdg", "--quiet", "--out", str(folder)]) == 2
    assert "folder" in capsys.readouterr().err


def test_evaluate_ranked_rows_keep_the_least_strained_of_the_model_draws(mols):
    """The ranked row's conformers are model draws, unchanged: with per-conformer noise, the K least strained of
    the first 2K."""
    from molediff.chem.evaluation import run_model, score_coordinates
    from molediff.chem.strain_ranking import strain_energies

    model = _tiny_model()
    rows, per = evaluate(mols, ["ranked", "ranked+mmff"], model=model, k=2, steps=3, seed=0, threads=1, draws=2)
    assert [r.method for r in rows] == ["ranked", "ranked+mmff"] and rows[0].conformers == 2 * len(mols)
    pool, _ = run_model(model, mols, 4, steps=3, seed=0)
    for m, xyz, drawn, kept in zip(mols, pool, score_coordinates(mols, pool), per["ranked"]):
        chosen = [i for i, r in enumerate(drawn.rmsds) if any(abs(r - q) < 1e-9 for q in kept.rmsds)]
        assert len(chosen) == 2
        energy = strain_energies(m.template, xyz)
        assert max(energy[chosen]) <= min(np.delete(energy, chosen))


def test_evaluate_product_ranked_rows_are_the_cli_draws_output(mols):
    """``product-ranked`` is ``molediff conformers --draws``: the product path driving the ranked sampler."""
    from molediff.chem.generate import generate_conformers_batch
    from molediff.chem.model import load_conformer_model
    from molediff.chem.strain_ranking import StrainRankedSampler

    model = load_conformer_model()  # an untrained network's draws never pass the product's checks
    rows, per = evaluate(mols, ["product-ranked", "product-ranked+mmff+polish"], model=model, k=2, steps=3, seed=0,
                         threads=1, draws=1.5)
    assert [r.method for r in rows] == ["product-ranked", "product-ranked+mmff+polish"]
    results = list(generate_conformers_batch([m.template for m in mols], 2, 0, model=StrainRankedSampler(model, 1.5),
                                             steps=3, on_invalid="resample"))
    from molediff.chem.evaluation import score_molecule

    assert any(res.ok for res in results)
    for m, res, score in zip(mols, results, per["product-ranked"]):
        if res.ok:
            assert res.mol.GetProp("molediff_start") == "prior; the least MMFF94-strained of 1.5x as many draws"
            np.testing.assert_allclose(score.rmsds, score_molecule(m, res.mol).rmsds, atol=1e-9)
        else:
            assert score.note == "no conformer"
