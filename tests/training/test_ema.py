import pytest
import torch
from torch import nn

from molediff.training.ema import EMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def test_update_matches_closed_form_without_warmup():
    model = _model()
    ema = EMA(model, decay=0.9, warmup=False)
    p0 = model[0].weight.detach().clone()
    values = []
    for k in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        values.append(model[0].weight.detach().clone())
        ema.update(model)
    expected = p0
    for v in values:
        expected = 0.9 * expected + 0.1 * v
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    assert ema.num_updates == 3


def test_warmup_decay_schedule():
    ema = EMA(_model(), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates = 10_000
    assert ema.current_decay() == pytest.approx(0.999)


def test_first_warmup_update_moves_mostly_to_params():
    model = _model()
    ema = EMA(model, decay=0.999, warmup=True)
    old = ema.shadow["2.bias"].clone()
    with torch.no_grad():
        model[2].bias.add_(10.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["2.bias"], 0.1 * old + 0.9 * model[2].bias.detach())


def test_swapped_restores_raw_weights_even_on_error():
    model = _model()
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        with ema.swapped(model):
            torch.testing.assert_close(model[0].weight, ema.shadow["0.weight"])
            raise RuntimeError("boom")
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])


def test_state_round_trip_and_averaged_state_dict_keeps_buffers():
    model = _model()
    ema = EMA(model, decay=0.8)
    with torch.no_grad():
        model[0].weight.mul_(2)
    ema.update(model)
    other = EMA(_model(), decay=0.1, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.decay == 0.8 and other.warmup
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k])
    avg = ema.averaged_state_dict(model)
    assert set(avg) == set(model.state_dict())  # includes BatchNorm running stats
    assert torch.equal(avg["0.weight"], ema.shadow["0.weight"])


def test_mismatched_state_raises():
    ema = EMA(_model())
    with pytest.raises(KeyError, match="missing"):
        ema.load_state_dict({"num_updates": 0, "shadow": {}})
    with pytest.raises(ValueError):
        EMA(_model(), decay=1.0)
