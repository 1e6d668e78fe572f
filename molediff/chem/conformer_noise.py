"""The noise each conformer is drawn from: one stream per (seed, molecule, conformer number).

:meth:`molediff.chem.model.ConformerModel.sample` packs the conformers of many molecules into one network
batch. If the batch shared one random stream, a molecule's conformers would change with every other molecule in
the call, with ``batch_size``, with the number of workers and with the order of the input. Here conformer ``k``
of a molecule draws all its noise from its own stream: Philox keyed by the call's seed and a digest of the
molecule's featurised graph (atoms in input order, their features, bonds), stream ``k``: the same molecule with the
same seed gets the same conformers wherever it sits. (The network's arithmetic on a batch of another size
can still round differently in the last bits.)
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from molediff.chem.featurize import MolGraph
from molediff.core.noise import PerSampleNoise

__all__ = ["graph_digest", "molecule_key", "conformer_noise"]


def graph_digest(graph: MolGraph) -> int:
    """A 128-bit integer digest of a featurised molecule (atomic numbers, node and edge features, edges)."""
    h = hashlib.sha256()
    for t in (graph.z, graph.node_attr, graph.edge_index, graph.edge_attr):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return int.from_bytes(h.digest()[:16], "little")


def molecule_key(seed: int, digest: int) -> int:
    """The 64-bit noise key of the molecule with ``digest`` in a call with ``seed``; its conformers are streams."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(np.random.SeedSequence([int(seed), int(digest)]).generate_state(1, dtype=np.uint64)[0])


def conformer_noise(seed: int, digests: Sequence[int], draws: Sequence[int], sizes: Sequence[int]) -> PerSampleNoise:
    """Noise for a batch whose sample ``i`` is conformer ``draws[i]`` of a molecule with ``digests[i]``.

    Sample ``i`` gets key :func:`molecule_key` ``(seed, digests[i])`` and stream ``draws[i]``
    (:class:`~molediff.core.noise.PerSampleNoise`).

    Parameters
    ----------
    seed : int
        The call's seed (``>= 0``).
    digests, draws, sizes : sequences of int
        Per sample: :func:`graph_digest` of its molecule, its conformer number, its atom count.

    Returns
    -------
    PerSampleNoise
        Rows ``[sum(sizes), ...]`` in sample order.
    """
    if not len(digests) == len(draws) == len(sizes):
        raise ValueError(f"{len(digests)} digests, {len(draws)} draws and {len(sizes)} sizes")
    if any(k < 0 for k in draws):
        raise ValueError("conformer numbers must be >= 0")
    keys = {d: molecule_key(seed, d) for d in set(digests)}  # once per molecule, not per conformer
    return PerSampleNoise([keys[d] for d in digests], sizes, streams=draws)
