"""Draw point clouds as a PNG grid of matplotlib 3-D scatter plots (headless, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from molediff.temp_files import reserve_temp_path

__all__ = ["render_grid"]


def render_grid(
    clouds: Any,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    point_size: float = 2.0,
    dpi: int = 100,
) -> Path:
    """Write one 3-D scatter panel per cloud to ``path`` (PNG, written atomically).

    All panels share equal axis limits (the largest extent of any cloud) so sizes are comparable;
    points are coloured by height (z).

    Parameters
    ----------
    clouds
        Array-like ``[B, P, 3]`` (torch tensors are accepted).
    titles
        Optional panel titles (``B`` strings).
    columns
        Panels per row.

    Shapes
    ------
    ``clouds: [B, P, 3]``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    arr = np.asarray(clouds.detach().cpu() if hasattr(clouds, "detach") else clouds, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"clouds must have shape [B, P, 3] with B >= 1, got {list(arr.shape)}")
    if titles is not None and len(titles) != arr.shape[0]:
        raise ValueError(f"got {len(titles)} titles for {arr.shape[0]} clouds")
    num = arr.shape[0]
    cols = max(1, min(columns, num))
    rows = -(-num // cols)
    lim = float(np.abs(arr).max()) or 1.0
    fig = plt.figure(figsize=(3 * cols, 3 * rows))
    try:
        for i, pts in enumerate(arr):
            ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=point_size, c=pts[:, 2], cmap="viridis", depthshade=False)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_zlim(-lim, lim)
            ax.set_box_aspect((1, 1, 1))
            ax.set_axis_off()
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = reserve_temp_path(path, suffix=".png")
        try:
            fig.savefig(tmp, dpi=dpi, format="png")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        plt.close(fig)
    return path
