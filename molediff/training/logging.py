"""Run logs: a JSON-lines file of training / validation rows and a tqdm progress bar.

Only rank 0 creates a :class:`RunLog` that writes; other ranks get a silent one. Rows are
flat JSON objects, one per line, e.g.
``{"kind": "train", "step": 100, "epoch": 0, "loss": 0.41, "lr": 0.001, "grad_norm": 1.2,
"time_s": 12.5}`` or ``{"kind": "val", "step": 500, "val/loss": 0.38, ...}``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from molediff.training.checkpoint import atomic_write_bytes

__all__ = ["RunLog", "read_log"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # keep the file strict JSON
    return value


class RunLog:
    """Append rows to ``<run_dir>/log.jsonl`` and drive an optional tqdm bar.

    Parameters
    ----------
    path
        The JSONL file; ``None`` makes a silent logger (non-zero ranks).
    total, initial
        Progress-bar length and starting step.
    progress
        Show a tqdm bar (rank 0 only).
    """

    def __init__(self, path: str | Path | None, *, total: int = 0, initial: int = 0, progress: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self._bar = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if progress:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, unit="step")

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step > step`` (rows written after the checkpoint a run resumes from)."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash
            if int(row.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n" if kept else "").encode())

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (flushed immediately)."""
        if self.path is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def advance(self, n: int = 1, **postfix: float) -> None:
        """Move the progress bar by ``n`` steps and show ``postfix`` values."""
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar (rank 0 only)."""
        if self.path is None:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Read every complete row of a JSONL run log."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
