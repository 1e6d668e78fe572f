"""Tests for molediff.pointcloud.metrics against brute-force numpy and known cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from molediff.pointcloud.metrics import (
    EMDSizeError,
    chamfer_distance,
    coverage,
    earth_movers_distance,
    minimum_matching_distance,
    one_nn_accuracy,
    pairwise_chamfer,
    pairwise_emd,
    point_cloud_metrics,
)


def brute_chamfer(a: np.ndarray, b: np.ndarray, squared: bool = True) -> float:
    d = np.array([[np.sum((p - q) ** 2) for q in b] for p in a])
    if not squared:
        d = np.sqrt(d)
    return d.min(axis=1).mean() + d.min(axis=0).mean()


def brute_emd(a: np.ndarray, b: np.ndarray) -> float:
    best = np.inf
    for perm in itertools.permutations(range(len(b))):
        best = min(best, np.mean(np.linalg.norm(a - b[list(perm)], axis=1)))
    return best


def brute_one_nna(gen: list[np.ndarray], ref: list[np.ndarray], dist) -> float:
    clouds = [(c, 1) for c in gen] + [(c, 0) for c in ref]
    correct = 0
    for i, (ci, li) in enumerate(clouds):
        same = min(dist(ci, cj) for j, (cj, lj) in enumerate(clouds) if j != i and lj == li)
        other = min(dist(ci, cj) for cj, lj in clouds if lj != li)
        correct += same < other
    return correct / len(clouds)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("squared", [True, False])
def test_pairwise_chamfer_matches_brute_force(rng, squared):
    x = rng.normal(size=(3, 7, 3))
    y = rng.normal(size=(4, 5, 3))
    got = pairwise_chamfer(torch.from_numpy(x), torch.from_numpy(y), squared=squared)
    want = np.array([[brute_chamfer(a, b, squared) for b in y] for a in x])
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


def test_pairwise_chamfer_chunking_is_invisible(rng):
    x = torch.from_numpy(rng.normal(size=(5, 9, 3)))
    y = torch.from_numpy(rng.normal(size=(6, 9, 3)))
    full = pairwise_chamfer(x, y)
    tiny = pairwise_chamfer(x, y, max_elements=1)
    torch.testing.assert_close(full, tiny)


def test_paired_chamfer_and_known_values(rng):
    a = rng.normal(size=(6, 3))
    assert float(chamfer_distance(a, a)) == pytest.approx(0.0, abs=1e-12)
    # translating a single point by t gives CD = 2 |t|^2 (squared) and 2 |t| (not squared)
    p, q = np.zeros((1, 3)), np.array([[0.0, 3.0, 4.0]])
    assert float(chamfer_distance(p, q)) == pytest.approx(50.0)
    assert float(chamfer_distance(p, q, squared=False)) == pytest.approx(10.0)
    xb, yb = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 6, 3))
    got = chamfer_distance(torch.from_numpy(xb), torch.from_numpy(yb))
    np.testing.assert_allclose(got.numpy(), [brute_chamfer(xb[i], yb[i]) for i in range(2)])


def test_emd_matches_permutation_brute_force(rng):
    x, y = rng.normal(size=(3, 6, 3)), rng.normal(size=(3, 6, 3))
    got = earth_movers_distance(x, y).numpy()
    np.testing.assert_allclose(got, [brute_emd(a, b) for a, b in zip(x, y)], rtol=1e-10)
    # EMD is permutation invariant and >= 0; zero for a shuffled copy
    perm = rng.permutation(6)
    assert float(earth_movers_distance(x[0], x[0][perm])) == pytest.approx(0.0, abs=1e-12)
    pw = pairwise_emd(x, y)
    assert pw.shape == (3, 3)
    np.testing.assert_allclose(np.diag(pw.numpy()), got)


def test_emd_refuses_instead_of_returning_zero():
    with pytest.raises(EMDSizeError, match="equal size"):
        earth_movers_distance(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(EMDSizeError, match="max_points"):
        earth_movers_distance(np.zeros((10, 3)), np.zeros((10, 3)), max_points=8)


def test_set_metrics_match_definitions(rng):
    d = torch.from_numpy(rng.random((5, 4)))  # [G, R]
    assert minimum_matching_distance(d) == pytest.approx(d.numpy().min(axis=0).mean())
    nearest = {int(np.argmin(row)) for row in d.numpy()}
    assert coverage(d) == pytest.approx(len(nearest) / 4)


def test_one_nna_matches_brute_force(rng):
    gen = [rng.normal(size=(5, 3)) for _ in range(4)]
    ref = [rng.normal(size=(5, 3)) + 0.3 for _ in range(3)]
    G, R = np.stack(gen), np.stack(ref)
    got = one_nn_accuracy(pairwise_chamfer(G, G), pairwise_chamfer(G, R), pairwise_chamfer(R, R))
    assert got == pytest.approx(brute_one_nna(gen, ref, brute_chamfer))


def test_one_nna_oracles():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 16, 3))
    far = rng.normal(size=(40, 16, 3)) + 10.0
    assert point_cloud_metrics(far, ref)["1-NNA-CD"] == 1.0
    # exact copies: every nearest neighbour is a tie with the other set -> 0 (memorisation)
    assert point_cloud_metrics(ref, ref)["1-NNA-CD"] == 0.0
    # two independent large samples of one distribution -> close to 0.5
    a = rng.normal(size=(200, 16, 3))
    b = rng.normal(size=(200, 16, 3))
    m = point_cloud_metrics(a, b)
    assert 0.4 < m["1-NNA-CD"] < 0.6
    assert m["COV-CD"] > 0.4
    assert point_cloud_metrics(far, ref)["COV-CD"] < m["COV-CD"]


def test_point_cloud_metrics_emd_and_errors(rng):
    a, b = rng.normal(size=(3, 8, 3)), rng.normal(size=(4, 8, 3))
    m = point_cloud_metrics(a, b, distances=("cd", "emd"))
    assert set(m) == {f"{k}-{d}" for k in ("MMD", "COV", "1-NNA") for d in ("CD", "EMD")}
    with pytest.raises(ValueError, match="unknown distance"):
        point_cloud_metrics(a, b, distances=("hausdorff",))
    with pytest.raises(ValueError, match="at least 2"):
        point_cloud_metrics(a[:1], b)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        pairwise_chamfer(np.zeros((2, 4, 2)), np.zeros((2, 4, 3)))


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_float32_chamfer_is_translation_invariant(offset):
    # |x|^2 + |y|^2 - 2 x.y in float32 cancelled catastrophically away from the origin: clouds in
    # float32 (as points.npz stores them) shifted by 1000 gave CD(a, a) = 0.03 and CD(a, b) = 0.168
    # instead of 0 and 0.296
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 512, 3, generator=g)
    want = float(chamfer_distance(a.double(), b.double()))
    shift = torch.tensor([offset, -offset, 0.5 * offset])
    a32, b32 = (a + shift).float(), (b + shift).float()
    assert float(chamfer_distance(a32, a32)) == pytest.approx(0.0, abs=1e-6)
    assert float(chamfer_distance(a32, b32)) == pytest.approx(want, rel=1e-3)
    pw = pairwise_chamfer(torch.stack([a32, b32]), torch.stack([b32, a32]))
    np.testing.assert_allclose(pw.numpy(), [[want, 0.0], [0.0, want]], rtol=1e-3, atol=1e-6)


def test_set_metrics_against_brute_force_with_unequal_set_sizes(rng):
    # MMD over references (min over generated), COV over generated (nearest reference), 1-NNA on the
    # union, with |S_g| != |S_r| and varying point counts, all from a plain double loop
    gen = rng.normal(size=(5, 6, 3))
    ref = rng.normal(size=(3, 6, 3)) * 1.3
    d = np.array([[brute_chamfer(x, y) for y in ref] for x in gen])
    m = point_cloud_metrics(gen, ref, distances=("cd", "emd"))
    assert m["MMD-CD"] == pytest.approx(np.mean([min(d[:, j]) for j in range(3)]))
    assert m["COV-CD"] == pytest.approx(len({int(np.argmin(d[i])) for i in range(5)}) / 3)
    assert m["1-NNA-CD"] == pytest.approx(brute_one_nna(list(gen), list(ref), brute_chamfer))
    e = np.array([[brute_emd(x, y) for y in ref] for x in gen])
    assert m["MMD-EMD"] == pytest.approx(np.mean(e.min(axis=0)))
    assert m["COV-EMD"] == pytest.approx(len(set(e.argmin(axis=1).tolist())) / 3)
    assert m["1-NNA-EMD"] == pytest.approx(brute_one_nna(list(gen), list(ref), brute_emd))
