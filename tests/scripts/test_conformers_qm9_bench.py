"""benchmarks/conformers_qm9.py: the model rows never get more threads than ETKDG's numThreads."""

from __future__ import annotations

import pytest

from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/conformers_qm9.py", "molediff_conformers_qm9_bench")


def test_more_workers_than_threads_is_refused_before_loading_anything(capsys, monkeypatch):
    bench = _module()
    monkeypatch.setattr(bench, "load_model_for_evaluation", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exc:  # was: 4 processes x 1 torch thread against RDKit numThreads=2
        bench.main(["--workers", "4", "--threads", "2", "--sweep-mols", "0"])
    assert exc.value.code == 2
    assert "--workers 4 exceeds --threads 2" in capsys.readouterr().err
