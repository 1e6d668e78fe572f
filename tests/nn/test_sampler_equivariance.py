"""Whole-sampler equivariance: equivariant network + zero-CoM space => rotated start gives rotated samples."""

from __future__ import annotations

import pytest
import torch

from molediff.core.denoiser import EDMPrecond
from molediff.core.samplers import sample_euler_maruyama, sample_heun
from molediff.core.schedules import karras_sigmas
from molediff.core.spaces import CenteredSpace
from molediff.nn.egnn import EGNN
from molediff.nn.gfn import GraphFieldNetwork
from molediff.nn.tensor_field import TensorFieldNetwork
from molediff.nn.testing import random_improper_rotation, random_rotation, relative_error

DTYPE = torch.float64
SIZES = [5, 9, 3]


def _net(name: str) -> torch.nn.Module:
    old = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)  # e3nn coupling coefficients in float64
    try:
        torch.manual_seed(0)
        if name == "egnn":
            return EGNN(4, 0, hidden=16, num_layers=2, fully_connected=True)
        if name == "gfn":
            return GraphFieldNetwork(4, 0, hidden=16, num_layers=2, fully_connected=True)
        return TensorFieldNetwork(4, 0, hidden=8, num_layers=2, lmax=1, radial_hidden=8, fully_connected=True)
    finally:
        torch.set_default_dtype(old)


def _setup(name: str):
    g = torch.Generator().manual_seed(1)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    node_attr = torch.nn.functional.one_hot(torch.randint(0, 4, (len(batch),), generator=g), 4).to(DTYPE)
    denoiser = EDMPrecond(_net(name), sigma_data=1.0).eval()
    return denoiser, CenteredSpace(batch), {"node_attr": node_attr, "batch": batch}


class _RotatedNoise(CenteredSpace):
    """CenteredSpace whose noise draws are rotated by ``R``: same law (the prior is isotropic), coupled paths."""

    def __init__(self, batch: torch.Tensor, rot: torch.Tensor) -> None:
        super().__init__(batch)
        self.rot = rot

    def _colour(self, z: torch.Tensor) -> torch.Tensor:
        return super()._colour(z) @ self.rot.T.to(z.dtype)


@pytest.mark.parametrize("name", ["egnn", "gfn", "tfn"])
def test_heun_ode_sampler_is_rotation_equivariant(name):
    denoiser, space, cond = _setup(name)
    g = torch.Generator().manual_seed(2)
    z = 10.0 * space.randn((space.num_nodes, 3), generator=g, dtype=DTYPE)
    sigmas = karras_sigmas(12, 0.01, 10.0, dtype=DTYPE)
    x = sample_heun(denoiser, z, sigmas, space=space, **cond)
    assert bool(torch.isfinite(x).all())
    for rot in [random_rotation(g, DTYPE), random_rotation(g, DTYPE)]:
        x_rot = sample_heun(denoiser, z @ rot.T, sigmas, space=space, **cond)
        assert relative_error(x_rot, x @ rot.T) < 1e-9
    mirror = random_improper_rotation(g, DTYPE)
    err = relative_error(sample_heun(denoiser, z @ mirror.T, sigmas, space=space, **cond), x @ mirror.T)
    if name == "tfn":  # chirality-aware: mirrored noise does not give the mirror image
        assert err > 1e-4
    else:
        assert err < 1e-9


@pytest.mark.parametrize("name", ["egnn", "tfn"])
def test_sde_sampler_distribution_is_rotation_invariant(name):
    """Pathwise coupling: rotating the start *and* every noise increment rotates the whole trajectory.

    The rotated increments have the same law as the originals (isotropic zero-CoM Gaussian, checked below), so
    this proves law(sample | start R z) = R law(sample | start z): rotation-invariant statistics such as the
    radius of gyration have the same distribution.
    """
    denoiser, space, cond = _setup(name)
    g = torch.Generator().manual_seed(3)
    rot = random_rotation(g, DTYPE)
    z = 10.0 * space.randn((space.num_nodes, 3), generator=g, dtype=DTYPE)
    sigmas = karras_sigmas(10, 0.01, 10.0, dtype=DTYPE)
    x = sample_euler_maruyama(denoiser, z, sigmas, space=space, generator=torch.Generator().manual_seed(7), **cond)
    rotated_space = _RotatedNoise(space.batch, rot)
    x_rot = sample_euler_maruyama(
        denoiser, z @ rot.T, sigmas, space=rotated_space, generator=torch.Generator().manual_seed(7), **cond
    )
    assert relative_error(x_rot, x @ rot.T) < 1e-9
    rg = space.sum_per_sample(x.square()) / space.counts
    torch.testing.assert_close(space.sum_per_sample(x_rot.square()) / space.counts, rg, rtol=1e-9, atol=0)


def test_centered_noise_is_isotropic_and_prior_is_invariant():
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(SIZES))
    space = CenteredSpace(batch)
    g = torch.Generator().manual_seed(4)
    z = space.randn((len(batch), 3), generator=g, dtype=DTYPE)
    centres = torch.zeros(3, 3, dtype=DTYPE).index_add_(0, batch, z)
    assert centres.abs().max() < 1e-12
    # empirical covariance of the 3 coordinates is ~ identity (no preferred direction to rotate away)
    many = torch.cat([space.randn((len(batch), 3), generator=g, dtype=DTYPE) for _ in range(400)])
    cov = many.T @ many / many.shape[0]
    mean_var = cov.diagonal().mean()
    assert (cov / mean_var - torch.eye(3, dtype=DTYPE)).abs().max() < 0.05
    rot = random_improper_rotation(g, DTYPE)
    torch.testing.assert_close(space.log_prior(z @ rot.T, 2.0), space.log_prior(z, 2.0))
