"""benchmarks/mixed_starts.py: each share's set takes the first conformers of each kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.scripts.script_loader import load_script


def _module():
    return load_script("benchmarks/mixed_starts.py", "molediff_mixed_starts")


def test_mixed_min_rmsd_takes_the_first_of_each_kind():
    bench = _module()
    prior = [[0.3, 0.1, 0.9], [0.8, 0.7, 0.6]]
    refined = [[0.5, 0.2, 0.05], [0.4, 0.9, 0.9]]
    assert bench.mixed_min_rmsd(prior, refined, 0, 3).tolist() == [0.05, 0.4]
    assert bench.mixed_min_rmsd(prior, refined, 3, 3).tolist() == [0.1, 0.6]
    assert bench.mixed_min_rmsd(prior, refined, 1, 3).tolist() == [0.2, 0.4]  # prior[0] + refined[:2]
    assert bench.mixed_min_rmsd(prior, refined, 2, 3).tolist() == [0.1, 0.4]  # prior[:2] + refined[0]
    # a molecule that got no finite conformer of either kind is a miss, not an error
    assert bench.mixed_min_rmsd([[]], [[]], 1, 2).tolist() == [math.inf]
    with pytest.raises(ValueError, match="num_prior"):
        bench.mixed_min_rmsd(prior, refined, 4, 3)


def test_summary_counts_misses_in_coverage_only():
    bench = _module()
    s = bench.summarise(np.array([0.05, 0.2, 0.4, math.inf]))
    assert s["median"] == pytest.approx(0.2) and s["mean"] == pytest.approx(0.65 / 3)
    assert (s["cov@0.5"], s["cov@0.25"], s["cov@0.1"]) == (0.75, 0.5, 0.25)
    assert bench.rotor_buckets([0, 3, 4, 9]).tolist() == [0, 3, 4, 4]
