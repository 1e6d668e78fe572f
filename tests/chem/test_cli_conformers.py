"""`molediff conformers` end to end (ETKDG baseline model), including kill -9 and --resume."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from rdkit import Chem

from molediff.chem.io_write import iter_records
from molediff.cli import main

from tests.chem.conftest import REPO

SMILES = ["CCO", "C[C@H](N)C(=O)O", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "OCC(O)CO", "C/C=C/C(=O)O"]


def _write_smi(path, n):
    path.write_text("".join(f"{SMILES[k % len(SMILES)]} mol{k}\n" for k in range(n)))


def test_stdout_sdf_from_positional_smiles(capsys):
    assert main(["conformers", "CCO", "CCN", "-n", "2", "--seed", "1", "--model", "etkdg", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count("$$$$") == 4 and out.startswith("input 1")


def test_csv_ids_titles_and_failure_report_json(tmp_path):
    inp, out, rep = tmp_path / "in.csv", tmp_path / "out.sdf", tmp_path / "fail.json"
    inp.write_text("ID,SMILES\na1,CCO\na2,C1CC\na3,[Na+].[Cl-]\n")
    rc = main(["conformers", "-i", str(inp), "-o", str(out), "-n", "2", "--model", "etkdg", "--seed", "0",
               "--failures", str(rep), "-q"])
    assert rc == 1  # a failure without --keep-going
    titles = [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert titles == ["a1", "a1", "a3", "a3"]
    rows = json.loads(rep.read_text())
    assert rows == [{"input_index": 1, "input_line": 3, "id": "a2", "smiles": "C1CC",
                     "error": "InvalidSmilesError", "reason": "unparsable SMILES 'C1CC' (syntax error)"}]


def test_keep_going_and_fragments_fail(tmp_path):
    inp, out = tmp_path / "in.smi", tmp_path / "out.xyz"
    inp.write_text("C[NH3+].[Cl-] salt\nCCO ok\n")
    base = ["conformers", "-i", str(inp), "-o", str(out), "-n", "1", "--model", "etkdg", "-q"]
    assert main(base + ["--fragments", "fail"]) == 1
    assert main(base + ["--fragments", "fail", "--keep-going"]) == 0
    assert main(base) == 0


def test_usage_errors(tmp_path, capsys):
    assert main(["conformers", "--model", "etkdg"]) == 2
    assert main(["conformers", "-i", str(tmp_path / "missing.smi"), "--model", "etkdg"]) == 2
    assert main(["conformers", "CCO", "-o", str(tmp_path / "x.pdf"), "--model", "etkdg"]) == 2
    assert main(["conformers", "CCO", "--relax", "xtb", "--model", "etkdg"]) == (0 if _has_tblite() else 2)
    assert "pip install molediff[xtb]" in capsys.readouterr().err or _has_tblite()


def test_corrupted_model_weights_are_a_usage_error_naming_the_file(tmp_path, capsys):
    import shutil

    import molediff

    shipped = os.path.join(os.path.dirname(molediff.__file__), "weights", "qm9_egnn")
    for suffix in (".json", ".safetensors"):
        shutil.copy(shipped + suffix, tmp_path / f"m{suffix}")
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CCO", "--model", str(tmp_path / "m.json"), "-o", str(out), "-q"]) == 2
    assert "m.safetensors do not match the SHA-256 in m.json" in capsys.readouterr().err
    assert not out.exists()


def test_start_etkdg_embeds_with_torchs_threads(etkdg_thread_counts, capsys):
    threads = torch.get_num_threads()
    assert main(["conformers", "CCO", "--start", "etkdg", "-n", "2", "--seed", "0", "-q"]) == 0
    assert etkdg_thread_counts and set(etkdg_thread_counts) == {max(1, threads)}


def _has_tblite():
    try:
        import tblite  # noqa: F401
    except ImportError:
        return False
    return True


def _read_sdf(path):
    """The molecules of an SDF output, gzip or plain."""
    import gzip

    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
        return list(Chem.ForwardSDMolSupplier(f, removeHs=False))


@pytest.mark.parametrize("name", ["big.sdf", "big.sdf.gz"])
def test_kill_9_then_resume_gives_complete_output_without_duplicates(tmp_path, name):
    import gzip

    inp, out = tmp_path / "big.smi", tmp_path / name
    n = 400
    _write_smi(inp, n)
    args = ["-m", "molediff", "conformers", "-i", str(inp), "-o", str(out), "-n", "2", "--seed", "5",
            "--model", "etkdg", "--batch-size", "4", "-q"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = tmp_path / f"{name}.progress.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if json.loads(state.read_text())["next_index"] >= 40:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    committed = json.loads(state.read_text())
    assert 0 < committed["next_index"] < n
    # everything committed is intact and parseable
    done = [i for i, _ in iter_records(out, "sdf")]
    assert len(done) >= 2 * committed["next_index"]
    with open(out, "rb") as f:
        prefix = f.read(committed["output_bytes"])
    if name.endswith(".gz"):
        prefix = gzip.decompress(prefix)  # the committed bytes end with a complete gzip member
    assert all(m is not None for m in Chem.ForwardSDMolSupplier(io.BytesIO(prefix), removeHs=False))
    # finish the job
    res = subprocess.run([sys.executable, *args, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    indices = [i for i, _ in iter_records(out, "sdf")]
    assert indices == sorted(indices) and indices == [k for k in range(n) for _ in range(2)]
    titles = [m.GetProp("_Name") for m in _read_sdf(out)]
    assert titles[::2] == [f"mol{k}" for k in range(n)]
    assert not state.exists()
    if name.endswith(".gz"):  # a valid gzip file throughout: no garbage left by the killed run
        assert gzip.decompress(out.read_bytes()).decode().count("$$$$") == 2 * n


def test_gzip_output_sdf_and_xyz(tmp_path):
    import gzip

    import ase.io

    for name in ("out.sdf.gz", "out.xyz.gz"):
        out = tmp_path / name
        assert main(["conformers", "CCO", "CCN", "-n", "2", "--seed", "1", "--model", "etkdg", "--batch-size", "1",
                     "-o", str(out), "-q"]) == 0
        with gzip.open(out, "rt") as f:
            text = f.read()
        assert gzip.decompress(out.read_bytes()).decode() == text  # two members, one per batch
        if name.endswith(".sdf.gz"):
            assert [m.GetProp("_Name") for m in _read_sdf(out)] == ["input 1"] * 2 + ["input 2"] * 2
        else:
            assert len(ase.io.read(io.StringIO(text), index=":", format="extxyz")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sdf.gz", "out.xyz.gz"]


def test_other_compressed_outputs_are_refused_with_the_way_to_get_them(tmp_path, capsys):
    assert main(["conformers", "CCO", "-o", str(tmp_path / "out.sdf.bz2"), "--model", "etkdg", "-q"]) == 2
    assert ".bz2 compression is not supported; use .sdf.gz or .xyz.gz" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_option_reaches_the_shipped_model_and_the_output(tmp_path, precision):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CC(=O)N", "-n", "2", "--seed", "0", "--precision", precision, "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert len(mols) == 2 and all(m.GetProp("molediff_precision") == precision for m in mols)


def test_precision_option_leaves_the_cached_shipped_model_alone(tmp_path):
    from molediff.chem.generate import resolve_model

    before = resolve_model(None).precision
    assert main(["conformers", "CCO", "-n", "1", "--seed", "0", "--precision", "fp32", "-o", str(tmp_path / "a.sdf"),
                 "-q"]) == 0
    assert resolve_model(None).precision == before


def test_start_etkdg_refines_with_the_shipped_model_and_records_it(tmp_path):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CC(=O)NC", "-n", "2", "--seed", "0", "--start", "etkdg", "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert len(mols) == 2
    for m in mols:
        assert m.GetProp("molediff_start") == "etkdg, sigma 0.6" and m.GetProp("molediff_steps") == "10"
        assert np.isfinite(m.GetConformer().GetPositions()).all()


def test_start_mixed_draws_half_from_the_prior_and_records_it(tmp_path):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CC(=O)NC", "-n", "2", "--seed", "0", "--start", "mixed", "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert len(mols) == 2
    for m in mols:
        assert m.GetProp("molediff_start") == "mixed: prior share 0.5 (15 steps), rest etkdg, sigma 0.6 (10 steps)"
        assert np.isfinite(m.GetConformer().GetPositions()).all()


def test_start_option_usage_errors(capsys):
    assert main(["conformers", "CCO", "--start", "etkdg", "--model", "etkdg", "-q"]) == 2
    assert "needs a diffusion model" in capsys.readouterr().err
    assert main(["conformers", "CCO", "--sigma-start", "0.5", "-q"]) == 2
    assert "--sigma-start needs --start etkdg" in capsys.readouterr().err
    assert main(["conformers", "CCO", "--start", "etkdg", "--prior-share", "0.3", "-q"]) == 2
    assert "--prior-share needs --start mixed" in capsys.readouterr().err
    assert main(["conformers", "CCO", "--start", "mixed", "--prior-share", "1", "-q"]) == 2
    assert "prior_share must be in [0, 1)" in capsys.readouterr().err


def test_polish_relaxes_and_polishes_with_the_shipped_model_and_records_it(tmp_path):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CC(=O)NC", "-n", "2", "--seed", "0", "--polish", "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert len(mols) == 2
    for m in mols:
        assert m.GetProp("molediff_model") == "molediff-qm9-egnn+mmff-polish"
        assert m.GetProp("molediff_start") == "prior; relaxed with MMFF94, polished from sigma 0.1 (4 steps)"
        assert m.GetProp("molediff_relaxed") == "none" and not m.HasProp("molediff_energy_kcal")
        assert m.GetProp("molediff_valid") == "1" and np.isfinite(m.GetConformer().GetPositions()).all()
    mixed = tmp_path / "mixed.sdf"
    assert main(["conformers", "CC(=O)NC", "-n", "2", "--seed", "0", "--start", "mixed", "--polish", "-o",
                 str(mixed), "-q"]) == 0
    first = next(iter(Chem.SDMolSupplier(str(mixed), removeHs=False)))
    assert first.GetProp("molediff_start") == ("mixed: prior share 0.5 (15 steps), rest etkdg, sigma 0.6 (10 steps); "
                                               "relaxed with MMFF94, polished from sigma 0.1 (4 steps)")


def test_polish_option_usage_errors(tmp_path, capsys):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CCO", "--polish", "--relax", "mmff", "-o", str(out), "-q"]) == 2
    assert "--polish relaxes with MMFF94 itself" in capsys.readouterr().err
    assert main(["conformers", "CCO", "--polish", "--model", "etkdg", "-o", str(out), "-q"]) == 2
    assert "--polish needs a diffusion model" in capsys.readouterr().err
    assert not out.exists()


def test_draws_keeps_the_least_strained_model_draws_and_records_them(tmp_path, capsys):
    out, plain = tmp_path / "out.sdf", tmp_path / "plain.sdf"
    assert main(["conformers", "CC(=O)NC", "-n", "3", "--seed", "0", "--draws", "2", "-o", str(out), "-q"]) == 0
    assert main(["conformers", "CC(=O)NC", "-n", "6", "--seed", "0", "-o", str(plain), "-q"]) == 0
    ranked = list(Chem.SDMolSupplier(str(out), removeHs=False))
    drawn = list(Chem.SDMolSupplier(str(plain), removeHs=False))
    assert len(ranked) == 3
    for m in ranked:
        assert m.GetProp("molediff_start") == "prior; the least MMFF94-strained of 2x as many draws"
        # each kept conformer is the unranked run's draw of the same number, bit for bit
        twin = drawn[int(m.GetProp("molediff_draw"))]
        assert twin.GetProp("molediff_draw") == m.GetProp("molediff_draw")
        np.testing.assert_array_equal(m.GetConformer().GetPositions(), twin.GetConformer().GetPositions())
    assert main(["conformers", "CCO", "--draws", "0.5", "-q"]) == 2
    assert "--draws must be a number >= 1, got 0.5" in capsys.readouterr().err
    assert main(["conformers", "CCO", "--draws", "2", "--model", "etkdg", "-q"]) == 2
    assert "--draws ranks a diffusion model's draws" in capsys.readouterr().err


def test_oversize_etkdg_routes_drug_sized_inputs_and_records_it(tmp_path):
    out = tmp_path / "out.sdf"
    drug = "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O"  # (S)-ibuprofen, 33 atoms with hydrogens: beyond QM9's 29
    assert main(["conformers", "CCO", drug, "-n", "2", "--seed", "0", "--oversize", "etkdg", "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert [m.GetProp("molediff_model") for m in mols] == ["molediff-qm9-egnn"] * 2 + ["etkdg"] * 2
    assert "embedded with ETKDGv3" in mols[2].GetProp("molediff_warnings")
    assert all(np.isfinite(m.GetConformer().GetPositions()).all() for m in mols)


def test_unsupported_etkdg_writes_etkdg_records_for_unknown_elements(tmp_path):
    out, rep = tmp_path / "out.sdf", tmp_path / "fail.json"
    assert main(["conformers", "CCO", "CSC", "-n", "2", "--seed", "0", "-o", str(out), "--failures", str(rep),
                 "-q"]) == 1  # default: the molecule fails, with a reason naming the element
    (row,) = json.loads(rep.read_text())
    assert row["smiles"] == "CSC" and row["error"] == "UnsupportedElementError" and "S" in row["reason"]
    out2 = tmp_path / "out2.sdf"
    assert main(["conformers", "CCO", "CSC", "-n", "2", "--seed", "0", "--unsupported", "etkdg",
                 "-o", str(out2), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out2), removeHs=False)]
    assert [m.GetProp("molediff_model") for m in mols] == ["molediff-qm9-egnn"] * 2 + ["etkdg"] * 2
    assert "unsupported='etkdg'" in mols[2].GetProp("molediff_warnings")


def test_warnings_of_written_molecules_reach_stderr_not_only_the_records(tmp_path, capsys):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CCO", "CSC", "-n", "2", "--seed", "0", "--unsupported", "etkdg",
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]  # CCO has none
    assert line.startswith("warning: input 2: element S") and "embedded with ETKDGv3 instead" in line
    assert "1 written molecule(s) came with warnings" in err
    assert main(["conformers", "CCO", "CSC", "-n", "2", "--seed", "0", "--unsupported", "etkdg",
                 "-o", str(tmp_path / "quiet.sdf"), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_csv_without_the_named_column_is_a_usage_error_before_any_output(tmp_path, capsys):
    inp, out = tmp_path / "in.csv", tmp_path / "out.sdf"
    inp.write_text("smiles,id\nCCO,a\n")
    assert main(["conformers", "-i", str(inp), "--smiles-column", "smi", "-o", str(out), "--model", "etkdg"]) == 2
    assert "in.csv: SMILES column 'smi' not found among ['smiles', 'id']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [inp]  # no output, progress or failure files
    assert main(["conformers", "-i", str(inp), "--id-column", "name", "-o", str(out), "--model", "etkdg"]) == 2
    assert "ID column 'name' not found" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--steps", "0", "--steps must be >= 1, got 0"),
    ("--sigma-start", "-0.5", "--sigma-start must be > 0"),
    ("--sigma-start", "nan", "--sigma-start must be > 0"),
    ("--sigma-start", "inf", "--sigma-start must be > 0 (Å) and finite, got inf"),
    ("--prune-rms", "-1", "--prune-rms must be >= 0"),
    ("--max-resample-rounds", "-1", "--max-resample-rounds must be >= 0"),
    ("--max-atoms", "0", "--max-atoms must be >= 1"),
    ("--seed", "-5", "--seed must be >= 0, got -5"),
])
def test_numeric_options_out_of_range_are_usage_errors(option, value, message, capsys):
    assert main(["conformers", "CCO", option, value, "--start", "etkdg", "-q"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_sampler_and_unusable_device_are_usage_errors(capsys):
    assert main(["conformers", "CCO", "--sampler", "bogus", "-q"]) == 2
    assert "unknown --sampler 'bogus'; choose from" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["conformers", "CCO", "--device", "cuda", "-q"]) == 2
        assert "device 'cuda' is not usable here" in capsys.readouterr().err


def test_unwritable_destinations_are_usage_errors_before_any_work(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["conformers", "CCO", "-o", str(missing / "out.sdf"), "--model", "etkdg", "-q"]) == 2
    assert f"-o {missing / 'out.sdf'}: folder {missing} does not exist" in capsys.readouterr().err
    out = tmp_path / "out.sdf"
    assert main(["conformers", "CCO", "-o", str(out), "--failures", str(missing / "f.csv"), "--model", "etkdg",
                 "-q"]) == 2
    assert "--failures" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_a_corrupt_gz_input_is_a_usage_error_naming_the_file(tmp_path, capsys):
    corrupt = tmp_path / "in.sdf.gz"
    corrupt.write_bytes(b"not gzip data")
    assert main(["conformers", "-i", str(corrupt), "-o", str(tmp_path / "out.sdf"), "--model", "etkdg", "-q"]) == 2
    assert f"{corrupt}: cannot read it: Not a gzipped file" in capsys.readouterr().err
    assert not (tmp_path / "out.sdf").exists()


def test_workers_report_a_usage_error_once_before_starting_any_worker(tmp_path, capsys):
    assert main(["conformers", "CCO", "--workers", "2", "-o", str(tmp_path / "out.sdf"), "--steps", "0", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("--steps must be >= 1, got 0") == 1 and "worker" not in err
    assert list(tmp_path.iterdir()) == []


def test_input_output_and_failures_on_the_same_file_are_usage_errors(tmp_path, capsys):
    sdf = tmp_path / "in.sdf"
    sdf.write_text(Chem.MolToMolBlock(Chem.MolFromSmiles("CCO")) + "$$$$\n")
    before = sdf.read_text()
    (tmp_path / "link.sdf").symlink_to(sdf)
    for extra in (["-o", str(sdf)], ["-o", str(tmp_path / "link.sdf")],
                  ["-o", str(tmp_path / "out.sdf"), "--failures", str(sdf)],
                  ["-o", str(tmp_path / "out.sdf"), "--failures", str(tmp_path / "out.sdf")]):
        assert main(["conformers", "-i", str(sdf), *extra, "--model", "etkdg", "-q"]) == 2
        assert "are the same file" in capsys.readouterr().err
    assert sdf.read_text() == before  # the input is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.sdf", "link.sdf"]


def test_a_negative_seed_is_a_usage_error_before_any_output(tmp_path, capsys):
    assert main(["conformers", "CCO", "-o", str(tmp_path / "out.sdf"), "--seed", "-5", "-q"]) == 2
    assert "--seed must be >= 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_gz_input_stops_with_a_message_and_resume_finishes_it(tmp_path, capsys):
    import gzip

    text = "".join(f"{SMILES[k % 3]} mol{k}\n" for k in range(300))
    full = gzip.compress(text.encode())
    inp, out = tmp_path / "in.smi.gz", tmp_path / "out.sdf"
    inp.write_bytes(full[: len(full) // 2])
    args = ["conformers", "-i", str(inp), "-o", str(out), "-n", "1", "--model", "etkdg", "--seed", "0",
            "--batch-size", "8", "-q"]
    assert main(args) == 1  # no traceback
    err = capsys.readouterr().err
    assert f"{inp}: truncated or corrupt after" in err and "--resume" in err
    written = [int(m.GetProp("molediff_input_index")) for m in Chem.SDMolSupplier(str(out))]
    assert 0 < len(written) < 300 and written == list(range(len(written)))
    inp.write_bytes(full)  # the file is fixed
    assert main(args + ["--resume"]) == 0
    assert [int(m.GetProp("molediff_input_index")) for m in Chem.SDMolSupplier(str(out))] == list(range(300))


def test_smiles_from_stdin_with_bad_lines_in_the_failure_report(tmp_path, cli):
    out, rep = tmp_path / "out.sdf", tmp_path / "fail.csv"
    res = cli("conformers", "-i", "-", "-o", str(out), "-n", "1", "--seed", "0", "--model", "etkdg",
              "--failures", str(rep), "-q", input_text="# header comment\nCCO a\nC1CC bad\n\nCCN b\n")
    assert res.returncode == 1, res.stderr  # two bad lines, no --keep-going
    assert [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(out))] == ["a", "b"]
    assert [m.GetProp("molediff_input_line") for m in Chem.SDMolSupplier(str(out))] == ["2", "5"]
    rows = rep.read_text().splitlines()
    assert rows[1].startswith("1,3,bad,C1CC,InvalidSmilesError") and rows[2].startswith("2,4,line 4,,EmptyInputError")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fail.csv", "out.sdf"]


def test_sdf_to_stdout_with_dash_keeps_stdout_a_clean_sdf(tmp_path, cli):
    res = cli("conformers", "-i", "-", "-o", "-", "-n", "2", "--seed", "0", input_text="CCO a\nC1CC bad\nCCN b\n",
              cwd=tmp_path)  # the shipped model, with the summary and a failure on stderr
    assert res.returncode == 1
    mols = list(Chem.ForwardSDMolSupplier(io.BytesIO(res.stdout.encode()), removeHs=False))
    assert [m.GetProp("_Name") for m in mols] == ["a", "a", "b", "b"] and all(m is not None for m in mols)
    assert res.stdout.startswith("a\n") and res.stdout.endswith("$$$$\n")
    assert "failed: line 2 (bad)" in res.stderr and "2 molecule(s) -> 4 conformer(s), 1 failed" in res.stderr
    assert list(tmp_path.iterdir()) == []  # no progress or failure journal


def test_stdin_and_stdout_cannot_be_resumed_or_shared_by_workers(tmp_path, capsys):
    out = tmp_path / "out.sdf"
    assert main(["conformers", "-i", "-", "-o", str(out), "--resume", "--model", "etkdg", "-q"]) == 2
    assert "--resume cannot re-read stdin (-i -)" in capsys.readouterr().err
    assert main(["conformers", "CCO", "-o", "-", "--resume", "--model", "etkdg", "-q"]) == 2
    assert "--resume needs -o FILE" in capsys.readouterr().err
    assert main(["conformers", "-i", "-", "-o", str(out), "--workers", "2", "-q"]) == 2
    assert "--workers cannot share stdin (-i -)" in capsys.readouterr().err
    assert main(["conformers", "CCO", "-o", "-", "--workers", "2", "-q"]) == 2
    assert "--workers needs -o OUTPUT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, content", [("in.smi", b""), ("in.smi", b"# a comment only\n"),
                                           ("in.csv", b"id,smiles\n"),
                                           ("in.sdf.gz", __import__("gzip").compress(b"", mtime=0))],
                         ids=["empty", "comment-only", "csv-header-only", "empty-gz"])
def test_an_empty_input_creates_no_file_and_leaves_an_earlier_output_alone(tmp_path, capsys, name, content):
    inp, out, rep = tmp_path / name, tmp_path / "out.sdf", tmp_path / "fail.csv"
    inp.write_bytes(content)
    base = ["conformers", "-i", str(inp), "-o", str(out), "--failures", str(rep), "--model", "etkdg"]
    assert main(base) == 1
    assert "contains no molecules; nothing to do, no file was created or changed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [inp]
    earlier = {out: "an earlier run's output\n", tmp_path / "out.sdf.progress.json": '{"next_index": 3}',
               tmp_path / "out.sdf.failures.jsonl": "{}\n", rep: "input_index\n"}
    for path, text in earlier.items():
        path.write_text(text)
    for argv in (base, base + ["--resume"], base[:-2] + ["--workers", "2"]):  # the model's worker processes too
        assert main(argv) == 1, argv
        assert "contains no molecules" in capsys.readouterr().err
        assert {path: path.read_text() for path in earlier} == earlier  # nothing removed, truncated or changed
    assert len(list(tmp_path.iterdir())) == 1 + len(earlier)


def test_empty_stdin_creates_no_file(tmp_path, cli):
    res = cli("conformers", "-i", "-", "-o", str(tmp_path / "out.sdf"), "--model", "etkdg", input_text="")
    assert res.returncode == 1 and "standard input (-i -) contains no molecules; nothing to do" in res.stderr
    assert list(tmp_path.iterdir()) == [] and res.stdout == ""


def test_ctrl_c_while_loading_the_model_exits_130_without_a_traceback(tmp_path, capsys, monkeypatch):
    import molediff.chem.generate as generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "resolve_model", interrupted)
    assert main(["conformers", "CCO", "-o", str(tmp_path / "out.sdf"), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
