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


def test_a_stem_that_ends_like_a_pair_file_is_not_stripped_twice(tmp_path):
    """``load_checkpoint`` took the stem of the stem: the pair ``x.json.json`` + ``x.json.safetensors`` that
    ``save_checkpoint("x.json")`` writes did not load from the path it returned."""
    import torch

    from molediff.training.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "x.json", {"w": torch.ones(2)}, {"step": 3})
    assert path == tmp_path / "x.json.json"
    assert load_checkpoint(path).tensors["w"].tolist() == [1.0, 1.0]
