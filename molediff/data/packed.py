"""A flat, pickle-free store of many small graphs with fast vectorised batching.

Featurising QM9 needs RDKit and minutes of CPU; training needs neither. ``PackedGraphs`` holds the
featurised molecules of a split as a handful of concatenated tensors (one safetensors file), so a
training job on a machine without RDKit (a GPU box) loads them in milliseconds, and a batch of graphs
is gathered with a few indexing operations instead of a Python loop over molecules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from molediff.temp_files import reserve_temp_path, set_default_mode

__all__ = ["GraphBatch", "PackedGraphs", "segment_arange"]


def segment_arange(counts: Tensor) -> Tensor:
    """``cat([arange(c) for c in counts])`` without a Python loop.

    Shapes
    ------
    counts: ``[M]`` (long, non-negative) → ``[counts.sum()]``.
    """
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


@dataclass
class GraphBatch:
    """Several graphs as one disjoint union (PyTorch Geometric conventions).

    Shapes
    ------
    pos: ``[N, 3]``; node_attr: ``[N, F]``; edge_index: ``[2, E]`` (global node indices);
    edge_attr: ``[E, F_e]``; batch: ``[N]`` (graph of each node, sorted); index: ``[B]`` (dataset
    index of each graph).
    """

    pos: Tensor
    node_attr: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    index: Tensor
    num_graphs: int

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "GraphBatch":
        """Move to ``device``; float tensors are cast to ``dtype`` when given."""
        cast = (lambda t: t.to(device=device, dtype=dtype)) if dtype is not None else (lambda t: t.to(device))
        return GraphBatch(
            pos=cast(self.pos),
            node_attr=cast(self.node_attr),
            edge_index=self.edge_index.to(device),
            edge_attr=cast(self.edge_attr),
            batch=self.batch.to(device),
            index=self.index.to(device),
            num_graphs=self.num_graphs,
        )

    def cond(self) -> dict[str, Tensor]:
        """The conditioning keywords every molediff score network takes."""
        return {
            "node_attr": self.node_attr,
            "edge_index": self.edge_index,
            "edge_attr": self.edge_attr,
            "batch": self.batch,
        }


class PackedGraphs:
    """Concatenated node/edge tensors of ``M`` graphs plus their offsets.

    Shapes
    ------
    pos: ``[N_total, 3]`` float32; node_attr: ``[N_total, F]`` (uint8 one-hot/flags);
    edge_index: ``[2, E_total]`` int32 *local* node indices within each graph;
    edge_attr: ``[E_total, F_e]`` uint8; node_ptr, edge_ptr: ``[M + 1]`` int64 offsets;
    index: ``[M]`` int64 dataset index of each graph.
    """

    _TENSORS = ("pos", "node_attr", "edge_index", "edge_attr", "node_ptr", "edge_ptr", "index")

    def __init__(
        self,
        pos: Tensor,
        node_attr: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        node_ptr: Tensor,
        edge_ptr: Tensor,
        index: Tensor,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        m = index.numel()
        if node_ptr.shape != (m + 1,) or edge_ptr.shape != (m + 1,):
            raise ValueError(f"node_ptr/edge_ptr must have shape [{m + 1}], got {tuple(node_ptr.shape)}, {tuple(edge_ptr.shape)}")
        if pos.shape != (int(node_ptr[-1]), 3) or node_attr.shape[0] != pos.shape[0]:
            raise ValueError("pos/node_attr do not match node_ptr")
        if edge_index.shape != (2, int(edge_ptr[-1])) or edge_attr.shape[0] != edge_index.shape[1]:
            raise ValueError("edge_index/edge_attr do not match edge_ptr")
        self.pos, self.node_attr, self.edge_index, self.edge_attr = pos, node_attr, edge_index, edge_attr
        self.node_ptr, self.edge_ptr, self.index = node_ptr.long(), edge_ptr.long(), index.long()
        self.metadata = dict(metadata or {})

    def __len__(self) -> int:
        return self.index.numel()

    @property
    def num_nodes(self) -> Tensor:
        """``[M]`` node count of each graph."""
        return self.node_ptr[1:] - self.node_ptr[:-1]

    @classmethod
    def from_graphs(
        cls,
        graphs: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]],
        index: Sequence[int],
        metadata: dict[str, Any] | None = None,
    ) -> "PackedGraphs":
        """Pack ``(pos [n,3], node_attr [n,F], edge_index [2,e] local, edge_attr [e,F_e])`` tuples."""
        if len(graphs) == 0:
            raise ValueError("cannot pack an empty list of graphs")
        n = torch.tensor([g[0].shape[0] for g in graphs])
        e = torch.tensor([g[2].shape[1] for g in graphs])
        zero = torch.zeros(1, dtype=torch.long)
        return cls(
            pos=torch.cat([g[0].float() for g in graphs]),
            node_attr=torch.cat([g[1] for g in graphs]).to(torch.uint8),
            edge_index=torch.cat([g[2] for g in graphs], dim=1).to(torch.int32),
            edge_attr=torch.cat([g[3] for g in graphs]).to(torch.uint8),
            node_ptr=torch.cat([zero, torch.cumsum(n, 0)]),
            edge_ptr=torch.cat([zero, torch.cumsum(e, 0)]),
            index=torch.as_tensor(list(index), dtype=torch.long),
            metadata=metadata,
        )

    def _gather(self, which: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Node ids, edge ids, node counts and edge counts of graphs ``which``."""
        which = which.long()
        n_counts = self.node_ptr[which + 1] - self.node_ptr[which]
        e_counts = self.edge_ptr[which + 1] - self.edge_ptr[which]
        node_ids = torch.repeat_interleave(self.node_ptr[which], n_counts) + segment_arange(n_counts)
        edge_ids = torch.repeat_interleave(self.edge_ptr[which], e_counts) + segment_arange(e_counts)
        return node_ids, edge_ids, n_counts, e_counts

    def batch(self, which: Tensor, dtype: torch.dtype = torch.float32) -> GraphBatch:
        """Gather graphs ``which`` (``[B]`` positions into this store) into one :class:`GraphBatch`."""
        node_ids, edge_ids, n_counts, e_counts = self._gather(which)
        new_offsets = torch.cumsum(n_counts, 0) - n_counts
        edge_index = self.edge_index[:, edge_ids].long() + torch.repeat_interleave(new_offsets, e_counts)
        return GraphBatch(
            pos=self.pos[node_ids].to(dtype),
            node_attr=self.node_attr[node_ids].to(dtype),
            edge_index=edge_index,
            edge_attr=self.edge_attr[edge_ids].to(dtype),
            batch=torch.repeat_interleave(torch.arange(which.numel()), n_counts),
            index=self.index[which.long()],
            num_graphs=which.numel(),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one safetensors file atomically; ``metadata`` goes into its JSON header."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).contiguous() for k in self._TENSORS}
        tmp = reserve_temp_path(path)
        try:
            save_file(tensors, tmp, metadata={"molediff": json.dumps(self.metadata)})
            set_default_mode(tmp)  # safetensors writes 0600 files
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PackedGraphs":
        """Read a file written by :meth:`save` (no pickle)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in cls._TENSORS}
            header = f.metadata() or {}
        return cls(**tensors, metadata=json.loads(header.get("molediff", "{}")))

    def subset(self, which: Tensor) -> "PackedGraphs":
        """A new store with graphs ``which`` only (e.g. a seeded evaluation subset)."""
        node_ids, edge_ids, n_counts, e_counts = self._gather(which)
        zero = torch.zeros(1, dtype=torch.long)
        return PackedGraphs(
            pos=self.pos[node_ids],
            node_attr=self.node_attr[node_ids],
            edge_index=self.edge_index[:, edge_ids],
            edge_attr=self.edge_attr[edge_ids],
            node_ptr=torch.cat([zero, torch.cumsum(n_counts, 0)]),
            edge_ptr=torch.cat([zero, torch.cumsum(e_counts, 0)]),
            index=self.index[which.long()],
            metadata=self.metadata,
        )
