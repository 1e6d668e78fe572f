"""The top-level ``molediff`` dispatcher: help, version and unknown commands."""

from __future__ import annotations

import pytest

from molediff import __version__
from molediff.cli import COMMANDS, main


def test_help_lists_every_command_and_says_what_the_tool_is(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "conformers from SMILES" in out
    assert "dispatcher" not in out  # the module docstring is for developers, not for --help


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"molediff {__version__}"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["conformer"])
    assert exit_info.value.code == 2
    assert "conformer" in capsys.readouterr().err


def test_sub_command_help_is_its_own(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["view", "--help"])
    assert exit_info.value.code == 0
    assert "usage: molediff view" in capsys.readouterr().out
