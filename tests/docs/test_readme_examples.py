"""The README's Python examples run as written, on the shipped model (slow: they sample for real).

The library example runs in-process; the worker-process example runs as its own script, since its workers
start with ``spawn`` and re-import the main module. The sampler sketch (``batch``, ``denoiser`` left to the
reader) is only compiled.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def _block_with(needle: str) -> str:
    (block,) = [b for b in _python_blocks() if needle in b]
    return block


def test_every_python_block_compiles():
    blocks = _python_blocks()
    assert len(blocks) >= 4
    for k, block in enumerate(blocks):
        compile(block, f"README.md python block {k}", "exec")


@pytest.mark.slow
def test_library_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(_block_with("molediff.generate_conformers("), "README.md", "exec"), namespace)
    mol, mixed, restarted = namespace["mol"], namespace["mixed"], namespace["restarted"]
    n = mol.GetNumAtoms()
    assert mol.GetNumConformers() == 10 and namespace["best"].GetNumConformers() == 10
    assert mixed.shape == (10, n, 3) and restarted.shape == (5, n, 3)
    assert namespace["redrawn"].shape == (10, n, 3) and np.isfinite(namespace["redrawn"]).all()
    assert namespace["both"].name.endswith("+mmff-polish")
    assert capsys.readouterr().out.splitlines() == ["input 1 True 5", "input 2 True 5"]


@pytest.mark.slow
def test_worker_process_example_runs_as_a_script(tmp_path):
    script = tmp_path / "workers_example.py"
    script.write_text(_block_with("ParallelConformerSampler(")
                      + "    print([tuple(c.shape) for c in coords])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[(10, 9, 3), (10, 13, 3), (10, 20, 3)]"
