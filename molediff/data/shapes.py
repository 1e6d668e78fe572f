"""Procedural 3-D shape families for point-cloud diffusion.

Every cloud is ``N`` points drawn on the *surface* of a parametric shape whose size and aspect
parameters are random. Sampling is area-uniform: closed-form for spheres, boxes, cylinders and
cones, rejection on the surface area element for the torus, ellipsoid, helical tube and Möbius
strip. Each cloud is centred (zero mean over its points) and scaled to a root-mean-square radius
of ``s`` with ``s`` drawn from ``scale_range`` so the classes have comparable overall size.
Shapes come in a canonical orientation (symmetry axis along ``z``) unless ``rotate=True``, which
applies a uniformly random rotation.

Determinism and splits: cloud ``k`` of class ``c`` in split ``s`` is drawn from its own
generator ``numpy.random.default_rng([seed, SPLITS[s], c, k])``, where ``c`` is the index in
:data:`SHAPE_CLASSES`. Different splits therefore use disjoint seed sequences, and a cloud does
not depend on how many clouds or which other classes are requested.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_CLASSES",
    "SPLITS",
    "ShapeDataset",
    "make_shapes",
    "random_rotation",
    "sample_shape",
]

#: Names of the shape families; a label is an index into this tuple.
SHAPE_CLASSES: tuple[str, ...] = (
    "sphere",
    "torus",
    "cube",
    "cylinder",
    "cone",
    "helix",
    "ellipsoid",
    "mobius",
)

#: Split name -> component of the per-cloud seed sequence (disjoint streams per split).
SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}

MIN_POINTS = 8

_Proposal = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _rejection(rng: np.random.Generator, n: int, propose: _Proposal) -> np.ndarray:
    """Keep proposals with probability ``weight`` (in [0, 1]) until ``n`` points are accepted.

    ``propose(rng, m)`` returns points ``[m, 3]`` and acceptance weights ``[m]``.
    """
    chunks: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(2 * (n - have), 64)
        pts, weight = propose(rng, m)
        keep = pts[rng.random(m) < weight]
        chunks.append(keep)
        have += len(keep)
    return np.concatenate(chunks)[:n]


def _unit_sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    return _unit_sphere(rng, n)


def _ellipsoid(rng: np.random.Generator, n: int) -> np.ndarray:
    axes = np.array([1.0, rng.uniform(0.55, 0.8), rng.uniform(0.28, 0.45)])

    def propose(g: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        u = _unit_sphere(g, m)
        # area element of the map u -> axes * u relative to its maximum (exact rejection)
        density = np.sqrt(((u / axes) ** 2).sum(axis=1)) * axes.min()
        return u * axes, density

    return _rejection(rng, n, propose)


def _torus(rng: np.random.Generator, n: int) -> np.ndarray:
    big, small = 1.0, rng.uniform(0.25, 0.5)

    def propose(g: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        u, v = g.uniform(0, 2 * np.pi, (2, m))
        ring = big + small * np.cos(v)
        pts = np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], axis=1)
        return pts, ring / (big + small)

    return _rejection(rng, n, propose)


def _cube(rng: np.random.Generator, n: int) -> np.ndarray:
    half = 0.5 * rng.uniform(0.85, 1.15, 3)  # a mildly irregular box
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    axis = rng.choice(3, size=n, p=areas / areas.sum())
    pts = rng.uniform(-1.0, 1.0, (n, 3)) * half
    side = rng.choice([-1.0, 1.0], size=n)
    rows = np.arange(n)
    pts[rows, axis] = side * half[axis]
    return pts


def _cylinder(rng: np.random.Generator, n: int) -> np.ndarray:
    radius, height = 1.0, rng.uniform(1.2, 3.0)
    areas = np.array([2 * np.pi * radius * height, np.pi * radius**2, np.pi * radius**2])
    part = rng.choice(3, size=n, p=areas / areas.sum())
    theta = rng.uniform(0, 2 * np.pi, n)
    rho = np.where(part == 0, radius, radius * np.sqrt(rng.random(n)))
    z = np.select(
        [part == 0, part == 1], [rng.uniform(-0.5, 0.5, n) * height, np.full(n, 0.5 * height)],
        default=-0.5 * height,
    )
    return np.stack([rho * np.cos(theta), rho * np.sin(theta), z], axis=1)


def _cone(rng: np.random.Generator, n: int) -> np.ndarray:
    radius, height = 1.0, rng.uniform(1.2, 2.5)
    lateral = np.pi * radius * np.hypot(radius, height)
    base = np.pi * radius**2
    on_side = rng.random(n) < lateral / (lateral + base)
    frac = np.sqrt(rng.random(n))  # distance from apex (side) or centre (base), area-uniform
    theta = rng.uniform(0, 2 * np.pi, n)
    rho = radius * frac
    z = np.where(on_side, height * (1.0 - frac), 0.0)
    return np.stack([rho * np.cos(theta), rho * np.sin(theta), z], axis=1)


def _helix(rng: np.random.Generator, n: int) -> np.ndarray:
    big = 1.0
    rise = rng.uniform(0.55, 0.9) / (2 * np.pi)  # pitch per radian
    turns = rng.uniform(2.5, 3.5)
    tube = rng.uniform(0.12, 0.2)
    speed = np.hypot(big, rise)
    kappa = big / speed**2

    def propose(g: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        t = g.uniform(0, 2 * np.pi * turns, m)
        phi = g.uniform(0, 2 * np.pi, m)
        c, s = np.cos(t), np.sin(t)
        centre = np.stack([big * c, big * s, rise * t], axis=1)
        normal = np.stack([-c, -s, np.zeros(m)], axis=1)
        binormal = np.stack([rise * s, -rise * c, np.full(m, big)], axis=1) / speed
        pts = centre + tube * (np.cos(phi)[:, None] * normal + np.sin(phi)[:, None] * binormal)
        # tube surface area element is proportional to 1 - kappa * tube * cos(phi)
        return pts, (1.0 - kappa * tube * np.cos(phi)) / (1.0 + kappa * tube)

    return _rejection(rng, n, propose)


def _mobius(rng: np.random.Generator, n: int) -> np.ndarray:
    big, width = 1.0, rng.uniform(0.3, 0.55)
    top = np.sqrt((big + width) ** 2 + width**2 / 4)

    def propose(g: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        u = g.uniform(0, 2 * np.pi, m)
        v = g.uniform(-width, width, m)
        ring = big + v * np.cos(u / 2)
        pts = np.stack([ring * np.cos(u), ring * np.sin(u), v * np.sin(u / 2)], axis=1)
        # |x_u x x_v|^2 = (R + v cos(u/2))^2 + v^2 / 4
        return pts, np.sqrt(ring**2 + v**2 / 4) / top

    return _rejection(rng, n, propose)


_GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sphere": _sphere,
    "torus": _torus,
    "cube": _cube,
    "cylinder": _cylinder,
    "cone": _cone,
    "helix": _helix,
    "ellipsoid": _ellipsoid,
    "mobius": _mobius,
}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar measure) from SO(3) via a random unit quaternion.

    Shapes
    ------
    returns ``[3, 3]`` with determinant +1.
    """
    w, x, y, z = _unit_quaternion(rng)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _unit_quaternion(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    return q / np.linalg.norm(q)


def _class_index(name: str) -> int:
    try:
        return SHAPE_CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown shape class {name!r}; choose from {SHAPE_CLASSES}") from None


def sample_shape(
    name: str,
    num_points: int,
    rng: np.random.Generator,
    *,
    rotate: bool = False,
    scale_range: tuple[float, float] = (0.85, 1.15),
) -> np.ndarray:
    """Draw one point cloud of shape family ``name``.

    Parameters
    ----------
    name
        One of :data:`SHAPE_CLASSES`.
    num_points
        Number of surface points ``N`` (at least 8; 64 to 2048 is the intended range).
    rng
        Source of all randomness (shape parameters, points, scale, rotation).
    rotate
        Apply a uniformly random rotation; off by default (canonical orientation).
    scale_range
        The cloud's root-mean-square distance from its centroid is drawn uniformly from this range.

    Shapes
    ------
    returns ``[N, 3]`` float64 with zero mean over points.
    """
    if name not in _GENERATORS:
        _class_index(name)  # raises with the list of valid names
    if int(num_points) < MIN_POINTS:
        raise ValueError(f"num_points must be >= {MIN_POINTS}, got {num_points}")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    pts = _GENERATORS[name](rng, int(num_points))
    pts = pts - pts.mean(axis=0)
    rms = np.sqrt((pts**2).sum(axis=1).mean())
    pts = pts * (rng.uniform(lo, hi) / rms)
    if rotate:
        pts = pts @ random_rotation(rng).T
    return pts - pts.mean(axis=0)


def make_shapes(
    num_per_class: int,
    num_points: int,
    *,
    classes: Sequence[str] | None = None,
    split: str = "train",
    seed: int = 0,
    rotate: bool = False,
    scale_range: tuple[float, float] = (0.85, 1.15),
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``num_per_class`` clouds of every requested class, class-major.

    Parameters
    ----------
    num_per_class
        Clouds per class.
    num_points
        Points per cloud ``N``.
    classes
        Subset of :data:`SHAPE_CLASSES` (default: all). Labels always index the full tuple.
    split
        ``"train"``, ``"validation"`` or ``"test"``; splits use disjoint seed sequences.
    seed
        Base seed; the same arguments always give the same clouds.
    rotate, scale_range
        See :func:`sample_shape`.
    dtype
        Floating dtype of the returned points.

    Shapes
    ------
    returns ``points: [num_clouds, N, 3]`` and ``labels: [num_clouds]`` (long), with
    ``num_clouds = len(classes) * num_per_class``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    if num_per_class < 0:
        raise ValueError(f"num_per_class must be >= 0, got {num_per_class}")
    names = tuple(SHAPE_CLASSES if classes is None else classes)
    clouds: list[np.ndarray] = []
    labels: list[int] = []
    for name in names:
        index = _class_index(name)
        for k in range(num_per_class):
            rng = np.random.default_rng([int(seed), SPLITS[split], index, k])
            clouds.append(sample_shape(name, num_points, rng, rotate=rotate, scale_range=scale_range))
            labels.append(index)
    points = np.stack(clouds) if clouds else np.zeros((0, int(num_points), 3))
    return torch.as_tensor(points, dtype=dtype), torch.as_tensor(labels, dtype=torch.long)


class ShapeDataset(Dataset):
    """A fixed, precomputed set of procedural shapes (see :func:`make_shapes` for arguments).

    ``dataset[i]`` is ``(points [N, 3], label)`` with ``label`` a 0-dim long tensor indexing
    :data:`SHAPE_CLASSES`; :attr:`points` ``[num_clouds, N, 3]`` and :attr:`labels`
    ``[num_clouds]`` hold the whole set.
    """

    def __init__(
        self,
        num_per_class: int,
        num_points: int,
        *,
        classes: Sequence[str] | None = None,
        split: str = "train",
        seed: int = 0,
        rotate: bool = False,
        scale_range: tuple[float, float] = (0.85, 1.15),
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.classes = tuple(SHAPE_CLASSES if classes is None else classes)
        self.split = split
        self.points, self.labels = make_shapes(
            num_per_class,
            num_points,
            classes=self.classes,
            split=split,
            seed=seed,
            rotate=rotate,
            scale_range=scale_range,
            dtype=dtype,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.points[index], self.labels[index]
