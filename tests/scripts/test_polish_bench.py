"""benchmarks/polish.py: the settings it accepts and refuses."""

from __future__ import annotations

import pytest

from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/polish.py", "molediff_polish_bench")


def test_settings_parse_noise_steps_guidance_and_sampler():
    parse = _module().parse_setting
    assert parse("0.1:4") == (0.1, 4, True, None)
    assert parse("0.07:6:unguided") == (0.07, 6, False, None)
    assert parse("0.1:4:guided:ddim") == (0.1, 4, True, "ddim")
    assert parse("0.1:1:unguided:euler") == (0.1, 1, False, "euler")


@pytest.mark.parametrize("spec", ["0.1", "0.1:4:sometimes", "0.1:4:unguided:rk4", "0.1:4:unguided:ddim:x"])
def test_malformed_settings_are_refused_with_the_expected_form(spec):
    with pytest.raises(ValueError, match=r"SIGMA:STEPS\[:guided\|unguided\]\[:SAMPLER\]"):
        _module().parse_setting(spec)
