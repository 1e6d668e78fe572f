"""benchmarks/cli_workers.py: each method is timed in one process and with --workers, with the right options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/cli_workers.py", "molediff_cli_workers")


def test_configurations_pair_each_method_with_its_workers_run():
    bench = _module()
    configs = dict(bench.configurations(3, "polish,etkdg+mmff"))
    assert configs == {
        "model --polish, 1 process (3 torch threads)": ["--polish"],
        "model --polish, --workers 3": ["--polish", "--workers", "3"],
        "ETKDG --relax mmff, 1 thread": ["--model", "etkdg", "--relax", "mmff"],
        "ETKDG --relax mmff, --workers 3 (RDKit threads)": ["--model", "etkdg", "--relax", "mmff", "--workers", "3"],
    }
    assert [label for label, _ in bench.configurations(2)] == [
        "model, 1 process (2 torch threads)", "model, --workers 2", "ETKDG, 1 thread",
        "ETKDG, --workers 2 (RDKit threads)"]


@pytest.mark.parametrize("methods", ["", "model,xtb", "Model"])
def test_unknown_methods_are_refused_by_name(methods):
    with pytest.raises(ValueError, match="choose from model, etkdg, polish, etkdg\\+mmff"):
        _module().configurations(2, methods)


def test_the_command_line_refuses_unknown_methods_before_loading_data(capsys):
    with pytest.raises(SystemExit) as exc:
        _module().main(["--methods", "xtb"])
    assert exc.value.code == 2
    assert "choose from" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_the_model_in_one_process_gets_the_thread_budget_of_workers_n(workers):
    # without the pin a fresh process takes torch's default (every core): "model, 1 process" ran 2 threads on a
    # 2-core machine next to "ETKDG, 1 thread" with --workers 1, and all cores against N anywhere else
    env = _module().command_env(workers)
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True)
    assert int(out.stdout) == workers
