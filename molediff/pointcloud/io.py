"""Reading and writing point clouds: ``.npy``, ``.npz``, plain ``.xyz`` text and ``.ply``.

Loaders return float64 numpy arrays and validate them (non-empty, finite, last axis 3); writers
refuse non-finite coordinates and write atomically (temporary file + rename). The PLY reader and
writer are small and hand-written: only vertex ``x, y, z`` are needed and trimesh / plyfile are
not dependencies of molediff. ``.xyz`` here means whitespace-separated ``x y z`` columns; atomic
(extended) XYZ files belong to ASE, see :mod:`molediff.chem`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from molediff.temp_files import reserve_temp_path

__all__ = [
    "EmptyPointCloudError",
    "NonFinitePointCloudError",
    "PointCloudFormatError",
    "PointCloudIOError",
    "PointCloudShapeError",
    "load_point_cloud",
    "save_npz",
    "save_ply",
    "validate_points",
]

PathLike = str | os.PathLike


class PointCloudIOError(ValueError):
    """Base class of point-cloud file errors; the message names the file."""


class EmptyPointCloudError(PointCloudIOError):
    """The file (or array) holds no points."""


class NonFinitePointCloudError(PointCloudIOError):
    """Some coordinate is NaN or infinite."""


class PointCloudShapeError(PointCloudIOError):
    """The array is not ``[N, 3]`` (or ``[B, N, 3]`` where batches are allowed)."""


class PointCloudFormatError(PointCloudIOError):
    """Unknown extension, malformed header or unparsable content."""


def validate_points(points: Any, *, source: str = "array", allow_batch: bool = False) -> np.ndarray:
    """Check and convert coordinates to a float64 array.

    Parameters
    ----------
    points
        Array-like ``[N, 3]`` (or ``[B, N, 3]`` when ``allow_batch``).
    source
        Name used in error messages (usually the file path).
    allow_batch
        Accept a leading batch axis.

    Shapes
    ------
    returns the same shape as ``points``, float64.

    Raises
    ------
    PointCloudShapeError, EmptyPointCloudError, NonFinitePointCloudError
    """
    arr = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points)
    if arr.dtype.kind not in "fiu":
        raise PointCloudShapeError(f"{source}: expected numeric coordinates, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    ndims = (2, 3) if allow_batch else (2,)
    if arr.ndim not in ndims or arr.shape[-1] != 3:
        want = "[N, 3] or [B, N, 3]" if allow_batch else "[N, 3]"
        raise PointCloudShapeError(f"{source}: expected shape {want}, got {list(arr.shape)}")
    if arr.size == 0:
        raise EmptyPointCloudError(f"{source}: point cloud is empty (shape {list(arr.shape)})")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.argwhere(bad)[:, -2])
        raise NonFinitePointCloudError(
            f"{source}: {int(bad.sum())} non-finite coordinate(s), first at point index {int(rows[0])}"
        )
    return arr


def load_point_cloud(path: PathLike, *, key: str | None = None) -> np.ndarray:
    """Load one point cloud (or a batch, from ``.npy`` / ``.npz``) from disk.

    Parameters
    ----------
    path
        ``.npy``, ``.npz``, ``.xyz`` / ``.txt`` (whitespace columns, first three are x y z,
        ``#`` comments allowed) or ``.ply`` (ASCII or binary, vertex ``x y z``).
    key
        Array name inside an ``.npz``; default ``"points"`` if present, else the only array.

    Shapes
    ------
    returns ``[N, 3]`` float64, or ``[B, N, 3]`` for batched ``.npy`` / ``.npz``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyPointCloudError(f"{path}: file is empty")
    ext = path.suffix.lower()
    if ext == ".npy":
        return validate_points(np.load(path, allow_pickle=False), source=str(path), allow_batch=True)
    if ext == ".npz":
        return validate_points(_read_npz(path, key), source=str(path), allow_batch=True)
    if ext in (".xyz", ".txt"):
        return validate_points(_read_xyz(path), source=str(path))
    if ext == ".ply":
        return validate_points(_read_ply(path), source=str(path))
    raise PointCloudFormatError(f"{path}: unsupported extension {ext!r} (use .npy, .npz, .xyz, .ply)")


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        if key is None:
            if "points" in names:
                key = "points"
            elif len(names) == 1:
                key = names[0]
            else:
                raise PointCloudFormatError(f"{path}: several arrays {names}; pass key=")
        if key not in names:
            raise PointCloudFormatError(f"{path}: no array {key!r}; arrays are {names}")
        return data[key]


_ATOMIC_XYZ_HINT = "molecular XYZ files (atom-count header, element symbols) are read with ASE, not here"


def _read_xyz(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.split("#", 1)[0].split()
            if not text:
                continue
            if len(text) < 3:
                raise PointCloudFormatError(
                    f"{path}:{lineno}: expected at least 3 columns x y z; {_ATOMIC_XYZ_HINT}"
                )
            try:
                rows.append([float(v) for v in text[:3]])
            except ValueError:
                raise PointCloudFormatError(
                    f"{path}:{lineno}: non-numeric column in {line.strip()!r}; {_ATOMIC_XYZ_HINT}"
                ) from None
    if not rows:
        raise EmptyPointCloudError(f"{path}: no points found")
    return np.asarray(rows, dtype=np.float64)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _read_ply_header(fh: BinaryIO, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]]]:
    """Parse the header; returns the format and ``[(element, count, [(prop, dtype|'list'), ...])]``."""
    if fh.readline().strip() != b"ply":
        raise PointCloudFormatError(f"{path}: not a PLY file (missing 'ply' magic)")
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    while True:
        raw = fh.readline()
        if not raw:
            raise PointCloudFormatError(f"{path}: PLY header has no 'end_header'")
        words = raw.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], _element_count(words[2], path), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif words[1] in _PLY_TYPES and len(words) == 3:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise PointCloudFormatError(f"{path}: unsupported PLY property line {raw!r}")
        else:
            raise PointCloudFormatError(f"{path}: unexpected PLY header line {raw!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointCloudFormatError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements


def _element_count(word: str, path: Path) -> int:
    """The count of a PLY ``element`` line: a non-negative integer, else a :class:`PointCloudFormatError`."""
    if not word.isdigit():
        raise PointCloudFormatError(f"{path}: PLY element count must be a non-negative integer, got {word!r}")
    return int(word)


def _read_ply(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        fmt, elements = _read_ply_header(fh, path)
        names = [e[0] for e in elements]
        if "vertex" not in names:
            raise PointCloudFormatError(f"{path}: PLY file has no 'vertex' element")
        if names.index("vertex") != 0:
            raise PointCloudFormatError(f"{path}: only PLY files whose first element is 'vertex' are supported")
        _, count, props = elements[0]
        pnames = [p[0] for p in props]
        if not {"x", "y", "z"} <= set(pnames):
            raise PointCloudFormatError(f"{path}: PLY vertex element lacks x, y, z properties")
        if any(t == "list" for _, t in props):
            raise PointCloudFormatError(f"{path}: list properties on PLY vertices are not supported")
        if count == 0:
            raise EmptyPointCloudError(f"{path}: PLY file has 0 vertices")
        cols = [pnames.index(c) for c in ("x", "y", "z")]
        if fmt == "ascii":
            lines = []
            for _ in range(count):
                raw = fh.readline()
                if not raw:
                    raise PointCloudFormatError(f"{path}: PLY ends after {len(lines)} of {count} vertices")
                lines.append(raw.split())
            try:
                table = np.array([[float(row[c]) for c in cols] for row in lines], dtype=np.float64)
            except (ValueError, IndexError):
                raise PointCloudFormatError(f"{path}: malformed ASCII PLY vertex line") from None
            for k, c in enumerate(cols):  # a 'float' property holds float32 values, as in a binary PLY
                if props[c][1] == "f4":
                    with np.errstate(over="ignore"):
                        table[:, k] = table[:, k].astype(np.float32)
            return table
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(n, order + t) for n, t in props])
        buf = fh.read(dtype.itemsize * count)
        if len(buf) < dtype.itemsize * count:
            raise PointCloudFormatError(f"{path}: binary PLY truncated ({len(buf)} bytes for {count} vertices)")
        table = np.frombuffer(buf, dtype=dtype, count=count)
        return np.stack([table[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = reserve_temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _as_float32(points: Any, source: str, allow_batch: bool = False) -> np.ndarray:
    """:func:`validate_points`, then float32; a finite value beyond float32's range is refused (not written
    as inf)."""
    arr = validate_points(points, source=source, allow_batch=allow_batch)
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        rows = np.unique(np.argwhere(~np.isfinite(out))[:, -2])
        raise NonFinitePointCloudError(
            f"{source}: coordinate(s) beyond the float32 range (|x| > 3.4e38), first at point index {int(rows[0])}"
        )
    return out


def save_npz(path: PathLike, points: Any, *, labels: Any | None = None, **extra: Any) -> None:
    """Write points (``[N, 3]`` or ``[B, N, 3]``) and optional labels and arrays to ``.npz``.

    The arrays are stored under ``"points"`` (float32), ``"labels"`` and the ``extra`` names.
    """
    path = Path(path)
    arr = _as_float32(points, str(path), allow_batch=True)
    arrays = {"points": arr, **{k: np.asarray(v) for k, v in extra.items()}}
    if labels is not None:
        arrays["labels"] = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    _atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def save_ply(path: PathLike, points: Any, *, binary: bool = True) -> None:
    """Write one cloud ``[N, 3]`` as PLY vertices (float32; binary little-endian or ASCII)."""
    path = Path(path)
    arr = _as_float32(points, str(path))
    fmt = "binary_little_endian" if binary else "ascii"
    header = (
        f"ply\nformat {fmt} 1.0\ncomment written by molediff\nelement vertex {len(arr)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode("ascii")

    def write(fh: BinaryIO) -> None:
        fh.write(header)
        if binary:
            fh.write(arr.astype("<f4").tobytes())
        else:
            # the shortest text that reads back as the same float32 (str of np.float32; '%.7g' was lossy)
            fh.write("".join(f"{x!s} {y!s} {z!s}\n" for x, y, z in arr).encode("ascii"))

    _atomic_write(path, write)
