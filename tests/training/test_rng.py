"""RNG snapshots: exact round trip, and resuming a generator saved on another device type."""

import pytest
import torch

from molediff.training.rng import capture_rng_state, restore_rng_state


def test_round_trip_restores_every_stream():
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    state = capture_rng_state({"noise": gen})
    first = (torch.rand(4), torch.rand(4, generator=gen))
    restore_rng_state(state, {"noise": gen})
    again = (torch.rand(4), torch.rand(4, generator=gen))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_state_of_another_device_type_reseeds_deterministically():
    state = capture_rng_state({"noise": torch.Generator().manual_seed(0)})
    state["gen.noise"] = torch.arange(16, dtype=torch.uint8)  # a CUDA (Philox) state is 16 bytes, not 5056
    draws = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(123)
        with pytest.warns(UserWarning, match="another device type"):
            restore_rng_state(state, {"noise": gen})
        draws.append(torch.rand(5, generator=gen))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], torch.rand(5, generator=torch.Generator().manual_seed(123)))


def test_missing_generator_state_is_an_error():
    state = capture_rng_state({})
    with pytest.raises(KeyError, match="noise"):
        restore_rng_state(state, {"noise": torch.Generator()})
