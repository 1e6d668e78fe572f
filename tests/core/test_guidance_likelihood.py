"""Guidance wrappers and PF-ODE likelihood / encode / decode."""

import pytest
import torch

from molediff.core.guidance import ClassifierFreeGuidance, ComposedGuidance, FixedSubset, concat_cond
from molediff.core.likelihood import decode, encode, lerp, log_likelihood, slerp
from molediff.core.samplers import prior_sample, sample_heun
from molediff.core.schedules import EDM
from molediff.core.spaces import CenteredSpace, EuclideanSpace

from .gaussian_mixture import GaussianMixture, mixture_2d


class _Conditional:
    """Denoiser with a class label y per row: y = 0,1 are the two modes, y = -1 the full mixture; counts calls."""

    def __init__(self):
        self.calls = 0
        means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
        self.full = GaussianMixture(means, 0.5)
        self.parts = [GaussianMixture(means[i : i + 1], 0.5) for i in range(2)]

    def __call__(self, x, sigma, y):
        self.calls += 1
        out = self.full.denoiser(x, sigma)
        for k in range(2):
            out = torch.where((y == k)[:, None], self.parts[k].denoiser(x, sigma), out)
        return out


def test_cfg_weights_zero_and_one():
    den = _Conditional()
    x, sigma = torch.randn(8, 2, dtype=torch.float64), torch.full((8,), 1.5, dtype=torch.float64)
    y, null = torch.zeros(8, dtype=torch.long), torch.full((8,), -1)
    for w, expected in [(0.0, den.full.denoiser(x, sigma)), (1.0, den.parts[0].denoiser(x, sigma))]:
        den.calls = 0
        out = ClassifierFreeGuidance(den, {"y": y}, {"y": null}, w)(x, sigma)
        assert torch.allclose(out, expected) and den.calls == 1  # one batched call
    out3 = ClassifierFreeGuidance(den, {"y": y}, {"y": null}, 3.0)(x, sigma)
    assert torch.allclose(out3, den.full.denoiser(x, sigma) + 3 * (den.parts[0].denoiser(x, sigma) - den.full.denoiser(x, sigma)))


def test_composition_adds_scores():
    den = _Conditional()
    x, sigma = torch.randn(8, 2, dtype=torch.float64), torch.full((8,), 0.7, dtype=torch.float64)
    comp = ComposedGuidance(den, [{"y": torch.zeros(8, dtype=torch.long)}, {"y": torch.ones(8, dtype=torch.long)}],
                            {"y": torch.full((8,), -1)})
    score = lambda d: (d - x) / 0.49  # noqa: E731
    s = score(comp(x, sigma))
    expected = score(den.parts[0].denoiser(x, sigma)) + score(den.parts[1].denoiser(x, sigma)) - score(den.full.denoiser(x, sigma))
    assert torch.allclose(s, expected) and den.calls == 1


def test_concat_cond_offsets_graphs():
    c = {"batch": torch.tensor([0, 0, 1]), "edge_index": torch.tensor([[0], [1]]), "h": torch.ones(3, 2), "flag": True}
    out = concat_cond([c, c], 3)
    assert out["batch"].tolist() == [0, 0, 1, 2, 2, 3]
    assert out["edge_index"].tolist() == [[0, 3], [1, 4]] and out["h"].shape == (6, 2) and out["flag"] is True


def test_concat_cond_and_guidance_with_empty_graphs():
    batch = torch.tensor([1, 1, 3])  # 5 graphs; 0 (leading), 2 (middle) and 4 (trailing) are empty
    assert concat_cond([{"batch": batch}] * 2, 3, num_graphs=5)["batch"].tolist() == [1, 1, 3, 6, 6, 8]
    with pytest.raises(ValueError, match="num_graphs=3"):
        concat_cond([{"batch": batch}] * 2, 3, num_graphs=3)
    label, null = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0]), torch.zeros(5)
    den = lambda x, s, *, batch, label: x + label[batch][:, None]  # per-graph condition  # noqa: E731
    x, sigma = torch.zeros(3, 1), torch.ones(3)
    cfg = ClassifierFreeGuidance(den, {"label": label}, {"label": null}, 1.0, space=CenteredSpace(batch, 5))
    assert cfg(x, sigma, batch=batch).flatten().tolist() == [11.0, 11.0, 13.0]  # graph 1 reads label[1]


def test_fixed_subset_inpainting():
    # two modes (-2, -1) and (2, 1): holding x_0 = 2 must select the right mode for the free x_1
    gm = GaussianMixture(torch.tensor([[-2.0, -1.0], [2.0, 1.0]], dtype=torch.float64), 0.5)
    n = 2000
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = 2.0
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[:, 0] = True
    for renoise in (False, True):
        den = FixedSubset(gm.denoiser, known, mask, renoise=renoise, generator=torch.Generator().manual_seed(3))
        x = prior_sample(EuclideanSpace(), (n, 2), 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
        out = sample_heun(den, x, EDM().sigmas(40))
        assert torch.equal(out[:, 0], known[:, 0])
        # replacement is an approximation of the exact conditional (~100 % here): it must clearly beat 50 %
        assert float((out[:, 1] > 0).double().mean()) > 0.8


@pytest.mark.parametrize("method", ["dopri5", "heun", "rk4"])
def test_likelihood_of_gaussian_matches_analytic(method):
    """rk4: torchdiffeq's fixed-step methods must be given the num_steps grid, not one step over [σ_min, σ_max]."""
    gm = GaussianMixture(torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64))
    x = gm.sample(16, torch.Generator().manual_seed(0))
    kw = {"rtol": 1e-7, "atol": 1e-7} if method == "dopri5" else {"num_steps": 400 if method == "heun" else 200}
    res = log_likelihood(gm.denoiser, x, sigma_min=1e-3, sigma_max=400.0, method=method, **kw)
    assert (res.log_prob - gm.log_prob(x, 1e-3)).abs().max() < 0.01
    assert torch.allclose(res.bits_per_dim, -res.log_prob / (3 * torch.log(torch.tensor(2.0, dtype=torch.float64))))


def test_likelihood_of_mixture_and_hutchinson():
    gm = mixture_2d(torch.float64)
    x = gm.sample(8, torch.Generator().manual_seed(0))
    exact = log_likelihood(gm.denoiser, x, sigma_max=400.0, rtol=1e-7, atol=1e-7)
    assert (exact.log_prob - gm.log_prob(x, 1e-3)).abs().max() < 0.01
    runs = torch.stack([
        log_likelihood(gm.denoiser, x, sigma_max=400.0, divergence="hutchinson", probe=p, num_probes=4,
                       generator=torch.Generator().manual_seed(s)).log_prob
        for p in ("rademacher", "gaussian") for s in range(6)
    ])
    # unbiased: the mean over independent probes is within 4 standard errors of the exact value
    err = (runs.mean(0) - exact.log_prob).abs()
    assert (err < 4 * runs.std(0) / runs.shape[0] ** 0.5 + 1e-3).all(), (err, runs.std(0))


def test_hutchinson_in_centered_space_and_exact_refused():
    batch = torch.tensor([0, 0, 0, 1, 1])
    space = CenteredSpace(batch)
    x = space.project(torch.randn(5, 3, dtype=torch.float64))
    den = lambda x, s, **c: x / (1 + s[:, None] ** 2)  # exact denoiser of N(0, I) on the subspace  # noqa: E731
    runs = torch.stack([
        log_likelihood(den, x, space=space, divergence="hutchinson", sigma_max=400.0, num_probes=8,
                       generator=torch.Generator().manual_seed(s)).log_prob for s in range(8)
    ])
    expected = space.log_prior(x, (1 + 1e-6) ** 0.5)
    err = (runs.mean(0) - expected).abs()
    assert (err < 4 * runs.std(0) / runs.shape[0] ** 0.5 + 1e-3).all(), (err, runs.std(0))
    with pytest.raises(ValueError, match="hutchinson"):
        log_likelihood(den, x, space=space)


def test_likelihood_encode_decode_refuse_points_off_the_centred_subspace():
    batch = torch.tensor([0, 0, 0, 1, 1, 3, 3])  # graph 2 is empty
    space = CenteredSpace(batch)
    x = space.project(torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    den = lambda x, s, **c: x / (1 + s[:, None] ** 2)  # noqa: E731
    kw = dict(space=space, sigma_max=400.0, method="heun", num_steps=8)
    ok = log_likelihood(den, x + 1e-9, divergence="hutchinson", generator=torch.Generator().manual_seed(0), **kw)
    assert torch.isfinite(ok.log_prob).all()  # round-off off-centre is tolerated
    shifted = x.clone()
    shifted[3:5] += 0.5
    shifted[5:] -= 0.25
    with pytest.raises(ValueError, match=r"sample\(s\) \[1, 3\] \(graphs"):
        log_likelihood(den, shifted, divergence="hutchinson", **kw)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        encode(den, shifted, **kw)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        decode(den, shifted, **kw)


def test_encode_decode_round_trip_and_interpolation():
    gm = mixture_2d(torch.float64)
    x = gm.sample(32, torch.Generator().manual_seed(0))
    z = encode(gm.denoiser, x, rtol=1e-7, atol=1e-7)
    assert z.std() > 20  # reached the prior scale
    assert (decode(gm.denoiser, z, rtol=1e-7, atol=1e-7) - x).abs().max() < 1e-4
    z2 = z.flip(0)
    assert torch.allclose(slerp(z, z2, 0.0), z) and torch.allclose(slerp(z, z2, 1.0), z2)
    z2 = z2 / z2.norm(dim=1, keepdim=True) * z.norm(dim=1, keepdim=True)  # equal norms: slerp keeps the norm
    mid = slerp(z, z2, 0.5)
    assert torch.allclose(mid.norm(dim=1), z.norm(dim=1))
    cos = lambda a, b: (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # noqa: E731
    assert torch.allclose(cos(mid, z), cos(mid, z2))
    assert torch.allclose(lerp(z, z2, 0.5), 0.5 * (z + z2))


@pytest.mark.parametrize("method", ["dopri5", "heun"])
def test_likelihood_encode_decode_of_an_empty_batch(method):
    gm = mixture_2d(torch.float64)
    x = torch.zeros(0, 2, dtype=torch.float64)
    res = log_likelihood(gm.denoiser, x, method=method, num_steps=4)
    assert res.log_prob.shape == (0,) and res.latent.shape == (0, 2)
    assert encode(gm.denoiser, x, method=method, num_steps=4).shape == (0, 2)
    assert decode(gm.denoiser, x, method=method, num_steps=4).shape == (0, 2)


def test_likelihood_refuses_fewer_than_one_probe():
    gm = mixture_2d(torch.float64)
    x = gm.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num_probes must be >= 1"):
        log_likelihood(gm.denoiser, x, divergence="hutchinson", num_probes=0, method="heun", num_steps=2)
