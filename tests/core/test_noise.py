"""PerSampleNoise: a sample's noise depends on its own seed only, never on its batch-mates or position."""

import pytest
import torch

from molediff.core.noise import PerSampleNoise, normal
from molediff.core.philox import philox4x32, uint32_to_normal
from molediff.core.samplers import sample
from molediff.core.spaces import CenteredSpace, HarmonicSpace
from molediff.core.utils import ShapeError


def _rows(draw: torch.Tensor, counts: list[int], i: int) -> torch.Tensor:
    start = sum(counts[:i])
    return draw[start: start + counts[i]]


# Random123's published known-answer vectors for Philox4x32-10 (its tests/kat_vectors): counter, key, output
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_matches_the_reference_known_answers(counter, key, expected):
    def words(values):
        return tuple(torch.tensor([v, 0], dtype=torch.int64) for v in values)  # a second lane alongside

    out = philox4x32(words(counter), words(key))
    assert tuple(int(w[0]) for w in out) == expected
    assert all(0 <= int(w.min()) and int(w.max()) < 2**32 for w in out)


def test_box_muller_maps_extreme_words_to_finite_values():
    z = uint32_to_normal(torch.tensor([[0, 0, 2**32 - 1, 2**32 - 1]], dtype=torch.int64))
    assert z.shape == (1, 4) and bool(torch.isfinite(z).all()) and float(z.abs().max()) < 7.0


def test_a_sample_draws_the_same_noise_whatever_its_batch_mates_and_position():
    a = PerSampleNoise([7, 8, 9], [3, 5, 2])
    b = PerSampleNoise([9, 123, 7], [2, 4, 3])  # seed 7 (3 rows) moved last, seed 9 first, another in between
    for _ in range(20):
        da, db = a.normal((10, 3)), b.normal((9, 3))
        torch.testing.assert_close(_rows(da, [3, 5, 2], 0), _rows(db, [2, 4, 3], 2), rtol=0, atol=0)
        torch.testing.assert_close(_rows(da, [3, 5, 2], 2), _rows(db, [2, 4, 3], 0), rtol=0, atol=0)


def test_successive_draws_seeds_and_streams_differ_and_a_seed_reproduces():
    a, again = PerSampleNoise([1, 2], [4, 4]), PerSampleNoise([1, 2], [4, 4])
    first, second = a.normal((8, 3)), a.normal((8, 3))
    assert not torch.equal(first, second)
    assert not torch.equal(first[:4], first[4:])
    torch.testing.assert_close(again.normal((8, 3)), first, rtol=0, atol=0)
    streams = PerSampleNoise([1, 1, 1], [4, 4, 4], streams=[0, 1, 0]).normal((12, 3))
    torch.testing.assert_close(streams[:4], first[:4], rtol=0, atol=0)  # seed 1, stream 0: the same values
    torch.testing.assert_close(streams[8:], first[:4], rtol=0, atol=0)
    assert not torch.equal(streams[4:8], streams[:4])  # another stream of the same seed
    assert PerSampleNoise([], []).normal((0, 3)).shape == (0, 3)
    assert PerSampleNoise([5, 6], [0, 2]).normal((2, 3)).shape == (2, 3)  # a sample without rows


def test_draws_are_standard_normal_with_the_requested_dtype_and_device():
    noise = PerSampleNoise(list(range(50)), [40] * 50)
    z = torch.cat([noise.normal((2000, 3), dtype=torch.float32, device="cpu") for _ in range(20)])
    assert z.dtype == torch.float32 and z.shape == (40_000, 3)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
    # different samples are uncorrelated
    per_sample = z.reshape(20, 50, 40, 3)
    corr = torch.corrcoef(per_sample[:, :2].reshape(20, 2, -1).permute(1, 0, 2).reshape(2, -1))
    assert abs(float(corr[0, 1])) < 0.05
    assert PerSampleNoise([0], [2]).normal((2, 3), dtype=torch.float64).dtype == torch.float64
    # the distribution itself: Kolmogorov-Smirnov against N(0, 1), and no correlation between successive draws
    from scipy import stats

    flat = z.double().flatten().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(float(torch.corrcoef(torch.stack([z[:-2000].flatten(), z[2000:].flatten()]))[0, 1])) < 0.02


def test_bad_arguments_are_refused():
    with pytest.raises(ShapeError):
        PerSampleNoise([1, 2], [3])
    with pytest.raises(ValueError):
        PerSampleNoise([-1], [3])
    with pytest.raises(ValueError):
        PerSampleNoise([2**64], [3])
    with pytest.raises(ValueError):
        PerSampleNoise([1], [-3])
    with pytest.raises(ValueError):
        PerSampleNoise([1], [3], streams=[2**32])
    with pytest.raises(ShapeError):
        PerSampleNoise([1], [3], streams=[0, 1])
    with pytest.raises(ShapeError, match="expected 3 rows"):
        PerSampleNoise([1], [3]).normal((4, 3))


def test_normal_takes_either_kind_of_generator():
    torch.testing.assert_close(normal((3, 2), torch.Generator().manual_seed(4)),
                               torch.randn(3, 2, generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(normal((3, 2), PerSampleNoise([5], [3])), PerSampleNoise([5], [3]).normal((3, 2)))


@pytest.mark.parametrize("harmonic", [False, True])
def test_a_stochastic_sampler_gives_a_graph_the_same_sample_in_any_batch(harmonic):
    """Through a space and a stochastic sampler: graph 0 alone equals graph 0 next to another graph."""

    def graphs(counts):
        batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        ptr = [0] + torch.tensor(counts).cumsum(0).tolist()
        edges = torch.tensor([[p + j, p + j + 1] for p, n in zip(ptr, counts) for j in range(n - 1)]).T
        space = HarmonicSpace(batch, edges, num_graphs=len(counts)) if harmonic else CenteredSpace(batch)
        return batch, space

    def denoiser(x, sigma, **cond):  # pulls every atom toward its graph's centre, a per-graph operation
        return x / (1 + sigma.reshape(-1, 1) ** 2) if sigma.ndim else x / (1 + sigma**2)

    sigmas = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.0])
    outs = []
    for seeds, counts in (([11], [4]), ([11, 12], [4, 6])):
        _, space = graphs(counts)
        noise = PerSampleNoise(seeds, counts)
        x = space.randn((sum(counts), 3), generator=noise, dtype=torch.float64) * 5.0
        outs.append(sample("ddpm", denoiser, x, sigmas, space=space, generator=noise)[:4])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
