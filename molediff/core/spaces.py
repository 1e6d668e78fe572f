"""Spaces: where the diffusion noise lives.

A space draws standard noise, projects points and vector fields onto itself, reduces per-row quantities to
per-sample ones and gives the prior log-density and the degrees of freedom. Samplers, losses and likelihoods
only ever touch noise and geometry through a space, so the same code serves toys ``[B, d]``, images
``[B, C, H, W]`` and flat graph batches ``[N, 3]`` with a PyG ``batch`` vector.

* :class:`EuclideanSpace` -- rows are samples, isotropic noise ``N(0, I)``.
* :class:`CenteredSpace` -- rows are nodes of graphs; noise is ``N(0, I)`` restricted to the zero centre of
  mass (CoM) subspace of every graph (Hoogeboom et al. 2022; Xu et al. 2022), ``3 (N_g - 1)`` dof per graph.
* :class:`HarmonicSpace` -- CoM-free Gaussian whose precision is ``k L + eps I`` with ``L`` the bond-graph
  Laplacian (a "harmonic" prior: bonded atoms start close). With x0-prediction the σ-form PF-ODE
  ``dx/dσ = (x - D(x, σ)) / σ`` holds for any fixed noise covariance, so every sampler works unchanged.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .noise import NoiseGenerator, normal
from .utils import ShapeError, check_batch_index, check_floating, check_same_rows, flat_rows

__all__ = ["Space", "EuclideanSpace", "CenteredSpace", "HarmonicSpace"]


def _sigma_per_sample(sigma: Union[Tensor, float], n: int, ref: Tensor) -> Tensor:
    s = torch.as_tensor(sigma, dtype=ref.dtype, device=ref.device)
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] not in (1, n)):
        raise ShapeError(f"sigma must be a scalar or have one entry per sample ({n}), got {list(s.shape)}")
    return s.expand(n) if s.ndim == 0 else s.expand(n)


class Space(ABC):
    """Abstract base class of noise spaces (see module docstring and CONTRIBUTING.md)."""

    def randn(
        self,
        shape: Sequence[int],
        *,
        generator: NoiseGenerator = None,
        dtype: Optional[torch.dtype] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tensor:
        """Standard noise of the space, drawn from ``generator`` (:func:`molediff.core.noise.normal`).

        Shapes
        ------
        returns ``shape`` (``[N, ...]``; rows must match the space for graph spaces).
        """
        shape = tuple(int(s) for s in shape)
        self._check_rows(shape[0] if shape else 0)
        z = normal(shape, generator, dtype=dtype, device=device)
        return self._colour(z)

    def randn_like(self, x: Tensor, generator: NoiseGenerator = None) -> Tensor:
        """Standard noise of the space with the shape, dtype and device of ``x``."""
        return self.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def _colour(self, z: Tensor) -> Tensor:
        """Map i.i.d. standard normal ``z`` to the space's standard noise (default: projection)."""
        return self.project(z)

    def _check_rows(self, n: int) -> None:  # noqa: B027 - optional hook
        """Hook for spaces with a fixed number of rows."""

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Orthogonal projection of a point or vector field onto the space (same shape as ``x``)."""

    @abstractmethod
    def num_samples(self, x: Tensor) -> int:
        """Number of independent samples held in ``x``."""

    @abstractmethod
    def per_row(self, values: Tensor) -> Tensor:
        """Expand per-sample values ``[num_samples, ...]`` to rows ``[num_rows, ...]``."""

    @abstractmethod
    def sum_per_sample(self, values: Tensor) -> Tensor:
        """Sum per-row values ``[num_rows, ...]`` (all trailing dims too) to ``[num_samples]``."""

    @abstractmethod
    def dof(self, x: Tensor) -> Tensor:
        """Degrees of freedom of every sample, ``[num_samples]`` (dtype of ``x``)."""

    def log_prior(self, x: Tensor, sigma: Union[Tensor, float]) -> Tensor:
        """Log-density of ``N(0, σ² I)`` restricted to the space, per sample.

        Parameters
        ----------
        x : Tensor
            Points of the space (already projected).
        sigma : float or Tensor
            Prior scale, a scalar or one value per sample.

        Shapes
        ------
        x: ``[N, ...]``; sigma: ``[]`` or ``[num_samples]``; returns ``[num_samples]``.
        """
        check_floating(x, "x")
        dof = self.dof(x)
        s = _sigma_per_sample(sigma, dof.shape[0], x)
        sq = self.sum_per_sample(x.square())
        return -0.5 * sq / s.square() - 0.5 * dof * torch.log(2 * math.pi * s.square())


class EuclideanSpace(Space):
    """The whole of ``R^{...}``: every row of ``x`` is one sample, noise is i.i.d. ``N(0, 1)``.

    Shapes
    ------
    x: ``[B, *dims]``; ``dof = prod(dims)`` per sample.
    """

    def _colour(self, z: Tensor) -> Tensor:
        return z

    def project(self, x: Tensor) -> Tensor:
        return x

    def num_samples(self, x: Tensor) -> int:
        return int(x.shape[0])

    def per_row(self, values: Tensor) -> Tensor:
        return values

    def sum_per_sample(self, values: Tensor) -> Tensor:
        return flat_rows(values).sum(1)

    def dof(self, x: Tensor) -> Tensor:
        d = math.prod(x.shape[1:])
        return x.new_full((x.shape[0],), float(d))

    def __repr__(self) -> str:
        return "EuclideanSpace()"


class CenteredSpace(Space):
    """Zero centre of mass per graph of a flat PyG-style batch.

    Parameters
    ----------
    batch : Tensor
        Sorted graph index of every node (``long``).
    num_graphs : int, optional
        Number of graphs (default ``batch.max() + 1``); trailing empty graphs are allowed.

    Shapes
    ------
    batch: ``[N]``; x: ``[N, d]`` (``d = 3`` for molecules); ``dof = d (N_g - 1)`` per graph.
    """

    def __init__(self, batch: Tensor, num_graphs: Optional[int] = None) -> None:
        check_batch_index(batch)
        self.batch = batch.long()
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        elif batch.numel() and int(batch.max()) >= num_graphs:
            raise ValueError(f"batch refers to graph {int(batch.max())} but num_graphs={num_graphs}")
        self.num_graphs = int(num_graphs)
        self.counts = torch.bincount(self.batch, minlength=self.num_graphs)
        self.ptr = torch.cat([self.counts.new_zeros(1), self.counts.cumsum(0)])
        # position of every node inside its graph
        self.position = torch.arange(self.batch.shape[0], device=batch.device) - self.ptr[self.batch]

    @property
    def num_nodes(self) -> int:
        return int(self.batch.shape[0])

    def _check_rows(self, n: int) -> None:
        if n != self.num_nodes:
            raise ShapeError(f"{type(self).__name__} has {self.num_nodes} nodes, got {n} rows")

    def _check_x(self, x: Tensor) -> None:
        check_same_rows(x, self.num_nodes, type(self).__name__)

    def _index(self, x: Tensor) -> Tensor:
        return self.batch.to(x.device)

    def _node_sum(self, values: Tensor) -> Tensor:
        out = values.new_zeros((self.num_graphs, *values.shape[1:]))
        return out.index_add_(0, self._index(values), values)

    def project(self, x: Tensor) -> Tensor:
        self._check_x(x)
        counts = self.counts.to(device=x.device, dtype=x.dtype).clamp(min=1)
        mean = self._node_sum(x) / counts.reshape(-1, *([1] * (x.ndim - 1)))
        return x - mean[self._index(x)]

    def num_samples(self, x: Tensor) -> int:
        return self.num_graphs

    def per_row(self, values: Tensor) -> Tensor:
        if values.shape[0] != self.num_graphs:
            raise ShapeError(f"per_row expects {self.num_graphs} per-graph values, got {values.shape[0]}")
        return values[self._index(values)]

    def sum_per_sample(self, values: Tensor) -> Tensor:
        self._check_x(values)
        return self._node_sum(flat_rows(values).sum(1))

    def dof(self, x: Tensor) -> Tensor:
        self._check_x(x)
        d = math.prod(x.shape[1:])
        return (self.counts.to(device=x.device, dtype=x.dtype) - 1).clamp(min=0) * d

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_graphs={self.num_graphs}, num_nodes={self.num_nodes})"


class HarmonicSpace(CenteredSpace):
    """CoM-free Gaussian with precision ``stiffness * L + eps * I`` from the bond graph (harmonic prior).

    The per-graph eigendecomposition of the precision restricted to the zero-CoM subspace is computed once
    at construction; :meth:`randn` colours i.i.d. noise with it and :meth:`log_prior` uses it. The covariance
    acts on atoms only (``Σ ⊗ I_d``), so the prior is invariant to rotations and translations.

    Parameters
    ----------
    batch : Tensor
        Sorted graph index of every node.
    edge_index : Tensor
        Bonds (either direction; duplicates are merged), global node indices.
    num_nodes : int, optional
        Number of nodes (default ``batch.shape[0]``); checked against ``batch``.
    num_graphs : int, optional
        Number of graphs.
    eps : float
        Ridge added to the Laplacian (keeps disconnected fragments proper).
    stiffness : float
        Spring constant multiplying the Laplacian.

    Shapes
    ------
    batch: ``[N]``; edge_index: ``[2, E]``; x: ``[N, d]``.
    """

    def __init__(
        self,
        batch: Tensor,
        edge_index: Tensor,
        num_nodes: Optional[int] = None,
        *,
        num_graphs: Optional[int] = None,
        eps: float = 1e-2,
        stiffness: float = 1.0,
    ) -> None:
        super().__init__(batch, num_graphs)
        if num_nodes is not None and num_nodes != self.num_nodes:
            raise ShapeError(f"num_nodes={num_nodes} but batch has {self.num_nodes} entries")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ShapeError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
        if edge_index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"edge_index must be an integer tensor, got dtype {edge_index.dtype}")
        if eps <= 0 or stiffness <= 0:
            raise ValueError(f"eps and stiffness must be > 0, got eps={eps}, stiffness={stiffness}")
        src, dst = edge_index.long().cpu()
        bcpu = self.batch.cpu()
        if src.numel() and (int(edge_index.max()) >= self.num_nodes or int(edge_index.min()) < 0):
            raise ValueError("edge_index refers to nodes outside the batch")
        if bool((bcpu[src] != bcpu[dst]).any()):
            raise ValueError("edge_index connects nodes of different graphs")
        self.eps, self.stiffness = float(eps), float(stiffness)
        n_max = int(self.counts.max()) if self.num_graphs else 0
        g = self.num_graphs
        dev = batch.device
        # colour[g] maps coefficients (rows 0..N_g-2 used) to node coordinates; basis[g] has the modes as columns
        self._colour_mat = torch.zeros(g, n_max, n_max, dtype=torch.float64)
        self._basis = torch.zeros(g, n_max, n_max, dtype=torch.float64)
        self._precision = torch.zeros(g, n_max, dtype=torch.float64)
        self._logdet = torch.zeros(g, dtype=torch.float64)  # sum of log eigenvalues (per atom)
        ptr, counts = self.ptr.cpu(), self.counts.cpu()
        for k in range(g):
            n, start = int(counts[k]), int(ptr[k])
            if n < 2:
                continue
            mask = (bcpu[src] == k)
            s, d = src[mask] - start, dst[mask] - start
            adj = torch.zeros(n, n, dtype=torch.float64)
            adj[s, d] = 1.0
            adj[d, s] = 1.0
            adj.fill_diagonal_(0.0)
            lap = torch.diag(adj.sum(1)) - adj
            prec = self.stiffness * lap + self.eps * torch.eye(n, dtype=torch.float64)
            # orthonormal basis of the zero-CoM subspace: QR of [1, e_1, ..., e_{n-1}]
            m = torch.cat([torch.ones(n, 1, dtype=torch.float64), torch.eye(n, dtype=torch.float64)[:, :-1]], 1)
            q = torch.linalg.qr(m)[0][:, 1:]
            lam, v = torch.linalg.eigh(q.T @ prec @ q)
            u = q @ v  # [n, n-1]
            self._basis[k, :n, : n - 1] = u
            self._colour_mat[k, :n, : n - 1] = u / lam.sqrt()
            self._precision[k, : n - 1] = lam
            self._logdet[k] = lam.log().sum()
        self._n_max = n_max
        self._cache: dict = {}
        self._colour_mat, self._basis = self._colour_mat.to(dev), self._basis.to(dev)
        self._precision, self._logdet = self._precision.to(dev), self._logdet.to(dev)

    def _mats(self, ref: Tensor) -> tuple:
        key = (ref.dtype, ref.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                t.to(dtype=ref.dtype, device=ref.device)
                for t in (self._colour_mat, self._basis, self._precision, self._logdet)
            )
        return self._cache[key]

    def _pad(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        out = flat.new_zeros(self.num_graphs, self._n_max, flat.shape[1])
        out[self._index(x), self.position.to(x.device)] = flat
        return out

    def _unpad(self, padded: Tensor, like: Tensor) -> Tensor:
        return padded[self._index(like), self.position.to(like.device)].reshape(like.shape)

    def _colour(self, z: Tensor) -> Tensor:
        colour = self._mats(z)[0]
        return self._unpad(colour @ self._pad(z), z)

    def covariance(self, graph: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
        """Per-atom covariance ``Σ_g`` of graph ``graph`` on the zero-CoM subspace, ``[N_g, N_g]``."""
        n = int(self.counts[graph])
        c = self._colour_mat[graph, :n, :n].to(dtype)
        return c @ c.T

    def log_prior(self, x: Tensor, sigma: Union[Tensor, float]) -> Tensor:
        """Log-density of ``N(0, σ² Σ ⊗ I_d)`` on the zero-CoM subspace, per graph ``[num_graphs]``."""
        check_floating(x, "x")
        self._check_x(x)
        _, basis, lam, logdet = self._mats(x)
        coef = basis.transpose(1, 2) @ self._pad(x)  # [G, n_max, d]
        quad = (lam.unsqueeze(-1) * coef.square()).sum((1, 2))
        dof = self.dof(x)
        d = math.prod(x.shape[1:])
        s = _sigma_per_sample(sigma, self.num_graphs, x)
        return -0.5 * quad / s.square() - 0.5 * dof * torch.log(2 * math.pi * s.square()) + 0.5 * d * logdet
