"""Precision selection for score-network inference."""

import pytest
import torch
from torch import nn

from molediff.nn.egnn import EGNN
from molediff.nn.precision import PRECISIONS, edge_precision, resolve_precision


def test_resolve_precision_names():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") in PRECISIONS
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_edge_precision_sets_and_restores_every_network_that_supports_it():
    outer = nn.ModuleList([EGNN(hidden=8, num_layers=1, fully_connected=True) for _ in range(2)])
    with edge_precision(outer, "bf16"):
        assert all(m.edge_dtype is torch.bfloat16 for m in outer)
    assert all(m.edge_dtype is None for m in outer)


def test_edge_precision_restores_after_an_exception():
    net = EGNN(hidden=8, num_layers=1, fully_connected=True)
    with pytest.raises(RuntimeError):
        with edge_precision(net, "bf16"):
            raise RuntimeError("boom")
    assert net.edge_dtype is None


def test_bf16_on_a_network_without_a_reduced_precision_path_is_refused():
    with pytest.raises(ValueError, match="no reduced-precision path"):
        with edge_precision(nn.Linear(2, 2), "bf16"):
            pass
    with edge_precision(nn.Linear(2, 2), "fp32"):  # fp32 is always fine
        pass


def test_bf16_is_fast_on_cuda_with_a_torch_whose_check_has_no_emulation_keyword(monkeypatch):
    from molediff.nn.precision import bf16_is_fast

    def old_style_check():  # torch's signature before it grew including_emulation
        return True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_style_check)
    assert bf16_is_fast("cuda") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bf16_is_fast("cuda") is False
