"""Naming the ``.json`` + ``.safetensors`` pair by either file or by a stem that may contain dots."""

from pathlib import Path

import pytest

from molediff.file_pair import file_pair, pair_stem


@pytest.mark.parametrize("given", ["runs/m.v2", "runs/m.v2.json", "runs/m.v2.safetensors"])
def test_a_dotted_stem_keeps_its_dots(given):
    assert pair_stem(given) == Path("runs/m.v2")
    assert file_pair(given) == (Path("runs/m.v2.json"), Path("runs/m.v2.safetensors"))


def test_a_plain_stem_and_an_unrelated_suffix():
    assert file_pair("step_00000010") == (Path("step_00000010.json"), Path("step_00000010.safetensors"))
    assert file_pair("model.yaml") == (Path("model.yaml.json"), Path("model.yaml.safetensors"))
