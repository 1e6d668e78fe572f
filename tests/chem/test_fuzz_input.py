"""Fuzz the input path: the batch never crashes and every input line is accounted for."""

import io
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from molediff.chem.errors import MolediffInputError
from molediff.chem.generate import generate_conformers_batch
from molediff.chem.io_read import read_csv, read_sdf, read_smi
from molediff.chem.sampler_protocol import EtkdgSampler

SMILES_ALPHABET = "CNOFSPclnos()[]=#@+-123456789/\\.%Hi "
_smiles_like = hs.text(alphabet=SMILES_ALPHABET, max_size=14)
_noise = hs.text(alphabet=string.printable + "\u00e9\u2603\x00", max_size=20)
_line = hs.one_of(_smiles_like, _noise, hs.sampled_from(["CCO", "c1ccccc1", "[Na+].[Cl-]", "[CH3]", "", "  "]))


class _FastModel(EtkdgSampler):
    name = "fuzz-etkdg"
    elements = ("H", "C", "N", "O", "F", "S", "P")
    max_atoms = 40


def _check(records, results):
    assert [r.index for r in results] == [r.index for r in records]
    for rec, res in zip(records, results):
        assert res.ok != (res.error is not None)
        if res.error is not None:
            assert isinstance(res.error, MolediffInputError) and res.error.reason
        else:
            assert res.mol.GetNumConformers() >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(_line, max_size=6))
def test_smi_lines_all_accounted_for(lines):
    text = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
    records = list(read_smi(io.StringIO(text)))
    non_comment = [ln for k, ln in enumerate(io.StringIO(text))
                   if not ln.strip().startswith("#") and not (k == 0 and ln.split()[:1] and ln.split()[0].lower() == "smiles")]
    assert len(records) == len(non_comment)
    results = list(generate_conformers_batch(records, 1, 0, model=_FastModel(), batch_size=3, max_atoms=40,
                                             max_resample_rounds=1))
    _check(records, results)


@settings(max_examples=30, deadline=None)
@given(hs.lists(hs.tuples(_noise, _line), max_size=5))
def test_csv_rows_all_accounted_for(rows):
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "smiles"])
    w.writerows(rows)
    records = list(read_csv(io.StringIO(buf.getvalue())))
    assert len(records) == len(rows)
    results = list(generate_conformers_batch(records, 1, 0, model=_FastModel(), batch_size=2, max_atoms=40,
                                             max_resample_rounds=1))
    _check(records, results)


@settings(max_examples=40, deadline=None)
@given(hs.lists(_noise, max_size=6))
def test_sdf_garbage_never_crashes(blocks):
    text = "".join(b.replace("$", "") + "\n$$$$\n" for b in blocks)
    records = list(read_sdf(io.StringIO(text)))
    assert len(records) == len(blocks)
    results = list(generate_conformers_batch(records, 1, 0, model=_FastModel(), max_atoms=40, max_resample_rounds=1))
    _check(records, results)
