"""QM9 DFT geometries (B3LYP/6-31G(2df,p)) as RDKit molecules and featurised graphs.

Source: the PyPI package ``qm9pack``, read *by file path* (its ``__init__`` is not imported):
``qm9pack/data/qm9_part{1,2,3}.csv`` with one row per molecule (130,831 rows; the 3,054
molecules that failed the original consistency check are already absent). Columns used:
``Index`` (the QM9 molecule number, 1-based, as in ``dsgdb9nsd_<Index>.xyz``), ``SMILES``
(QM9's GDB SMILES, without stereo), ``Elements`` and ``XYZ_Ang`` (coordinates in Å).

Processing per molecule (see :func:`process_record`): parse the SMILES, add hydrogens, map the
XYZ atom order onto the RDKit atom order by graph isomorphism with
:func:`molediff.chem.bonds.map_geometry_to_mol` (covalent-radius connectivity, extended Hückel
fallback, verified bond lengths), resolve the graph's symmetries that ignore bond orders by
putting the higher orders on the shorter bonds (:func:`place_bond_orders`), attach the DFT
geometry as conformer 0, perceive stereo from 3D and featurise. Molecules whose relaxed
geometry no longer matches their SMILES graph are dropped and counted per reason in a
:class:`DropReport`.

Split (fixed): ``Index % 10 == 0`` test, ``== 1`` validation (``"valid"``), otherwise train.

The processed splits are cached as safetensors + JSON (no pickle) under
``$MOLEDIFF_CACHE/qm9/<QM9_CACHE_VERSION>_rdkit-<version>_qm9pack-<version>/`` (default
``~/.cache/molediff/qm9/...``, :func:`cache_folder`).
"""
from __future__ import annotations

import csv
import importlib.util
import time
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from rdkit import Chem, rdBase

from molediff.chem.bonds import GeometryMismatchError, map_geometry_to_mol
from molediff.chem.featurize import (EDGE_FEATURE_DIM, FEATURIZER_VERSION, NODE_FEATURE_DIM,
                                     FeaturizationError, MolGraph, featurize)
from molediff.data.cache import cache_complete, default_cache_dir, load_arrays, save_arrays

__all__ = [
    "SPLITS", "QM9_CACHE_VERSION", "cache_folder", "source_versions", "split_of", "qm9pack_data_dir", "iter_qm9_raw",
    "process_record", "place_bond_orders", "DropReport", "QM9Record", "QM9Dataset",
    "prepare_qm9", "load_qm9",
]

SPLITS = ("train", "valid", "test")
PROCESSING_VERSION = "qm9-proc-v1"
QM9_CACHE_VERSION = f"{PROCESSING_VERSION}_{FEATURIZER_VERSION}"
_ALIASES = {"val": "valid", "validation": "valid"}
_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def split_of(index: int) -> str:
    """Split of a QM9 molecule from its 1-based ``Index``: %10==0 test, ==1 valid, else train."""
    r = index % 10
    return "test" if r == 0 else "valid" if r == 1 else "train"


def _canon_split(split: str) -> str:
    split = _ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown QM9 split {split!r}; expected one of {SPLITS}")
    return split


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    return int(limit)


def qm9pack_data_dir() -> Path:
    """Directory holding qm9pack's CSV files, located without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("QM9 needs the 'qm9pack' package: pip install qm9pack")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not all((path / f).exists() for f in _FILES):
        raise FileNotFoundError(f"qm9pack CSV files not found in {path}")
    return path


@dataclass(frozen=True)
class RawQM9:
    """One CSV row: ``pos`` [N, 3] in Å in QM9's atom order."""

    index: int
    smiles: str
    symbols: tuple[str, ...]
    pos: np.ndarray


def iter_qm9_raw(split: str | None = None, limit: int | None = None) -> Iterator[RawQM9]:
    """Stream QM9 rows (optionally of one split, at most ``limit`` of them) in Index order."""
    split = None if split is None else _canon_split(split)
    limit = _check_limit(limit)
    csv.field_size_limit(1 << 30)
    data_dir, count = qm9pack_data_dir(), 0
    for fname in _FILES:
        with open(data_dir / fname, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            ci, cs, ce, cx = col["Index"], col["SMILES"], col["Elements"], col["XYZ_Ang"]
            for row in reader:
                index = int(row[ci])
                if split is not None and split_of(index) != split:
                    continue
                if limit is not None and count >= limit:
                    return
                symbols = tuple(s.strip(" '\"") for s in row[ce].strip("[]").split(","))
                pos = _parse_xyz(row[cx], len(symbols))
                count += 1
                yield RawQM9(index, row[cs], symbols, pos)


def _parse_xyz(text: str, n: int) -> np.ndarray:
    """Parse ``[[x,y,z],...]`` (numbers may read ``1.`` or Mathematica's ``1.2*^-6``) -> [n, 3]."""
    flat = text.replace("[", "").replace("]", "").replace("*^", "e").split(",")
    return np.array([float(v) for v in flat], dtype=np.float64).reshape(n, 3)


@dataclass
class DropReport:
    """Molecules dropped during processing: ``counts[reason]`` and ``dropped[(index, reason)]``."""

    total: int = 0
    kept: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    hueckel_fallbacks: int = 0

    def add(self, index: int, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.dropped.append((index, reason))

    def to_json(self) -> dict:
        return {"total": self.total, "kept": self.kept, "counts": self.counts,
                "dropped": self.dropped, "hueckel_fallbacks": self.hueckel_fallbacks}

    @classmethod
    def from_json(cls, d: dict) -> "DropReport":
        return cls(d["total"], d["kept"], dict(d["counts"]),
                   [tuple(x) for x in d["dropped"]], d.get("hueckel_fallbacks", 0))

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "none"
        return (f"{self.kept}/{self.total} kept; dropped by reason: {reasons}; "
                f"extended-Hückel fallbacks: {self.hueckel_fallbacks}")


def process_record(raw: RawQM9) -> dict | tuple[int, str, str]:
    """Turn one raw row into arrays, or return ``(index, reason, message)`` if it is dropped."""
    name = f"QM9 {raw.index} ({raw.smiles})"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(raw.smiles)
    if mol is None:
        return raw.index, "smiles_parse", f"{name}: RDKit cannot parse the SMILES"
    mol = Chem.AddHs(mol)
    try:
        pos, hueckel = map_geometry_to_mol(mol, raw.symbols, raw.pos, name)
    except GeometryMismatchError as err:
        return raw.index, err.reason, str(err)
    pos = place_bond_orders(mol, pos)
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(pos):
        conf.SetAtomPosition(i, p.tolist())
    mol.AddConformer(conf, assignId=True)
    Chem.AssignStereochemistryFrom3D(mol)
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    mol.SetProp("_Name", f"qm9_{raw.index}")
    try:
        graph = featurize(mol)
    except FeaturizationError as err:
        return raw.index, "featurize", f"{name}: {err}"
    return {
        "index": raw.index, "smiles": smiles, "hueckel": hueckel,
        "mol": np.frombuffer(mol.ToBinary(), dtype=np.uint8),
        "z": graph.z.numpy().astype(np.uint8), "pos": pos.astype(np.float32),
        "node_attr": graph.node_attr.numpy().astype(np.uint8),
        "edge_index": graph.edge_index.numpy().astype(np.int16),
        "edge_attr": graph.edge_attr.numpy().astype(np.uint8),
    }


#: An alternative mapping replaces the one found only if it lowers sum(bond order x length) by
#: more than this (Å); below it the forms are resonance-equivalent (carboxylate, nitro, amidinium)
#: and the first mapping is kept.
ORDER_MARGIN = 0.1


def place_bond_orders(mol: Chem.Mol, pos: np.ndarray) -> np.ndarray:
    """Among the mappings that differ by a symmetry of the order-free bond graph, the one that
    puts the higher bond orders on the shorter bonds. Shapes: pos [N, 3] -> [N, 3].

    The isomorphism behind ``map_geometry_to_mol`` ignores bond orders, and that graph can have
    symmetries the molecule lacks: rotating cyclooctatetraene's ring by one atom maps every C=C
    onto a C-C, and such a mapping passes the element and bond-length checks. The symmetries are
    enumerated on the heavy atoms (labelled by element and hydrogen count); hydrogens follow
    their heavy atom.
    """
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    if len(heavy) < 2:
        return pos
    local = {i: k for k, i in enumerate(heavy)}
    rw = Chem.RWMol()
    hs: list[list[int]] = []
    for i in heavy:
        atom = mol.GetAtomWithIdx(i)
        hs.append([n.GetIdx() for n in atom.GetNeighbors() if n.GetAtomicNum() == 1])
        q = Chem.Atom(atom.GetAtomicNum())
        q.SetIsotope(len(hs[-1]) + 1)  # hydrogen count as a label
        q.SetNoImplicit(True)
        rw.AddAtom(q)
    pairs, orders = [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        if i in local and j in local:
            rw.AddBond(local[i], local[j], Chem.BondType.SINGLE)
            pairs.append((local[i], local[j]))
            orders.append(b.GetBondTypeAsDouble())
    if not pairs:
        return pos
    graph = rw.GetMol()
    graph.UpdatePropertyCache(strict=False)
    syms = graph.GetSubstructMatches(graph, uniquify=False, useChirality=False, maxMatches=10000)
    ij, w, hpos = np.array(pairs), np.array(orders), pos[heavy]

    def score(sigma: np.ndarray) -> float:
        return float(w @ np.linalg.norm(hpos[sigma[ij[:, 0]]] - hpos[sigma[ij[:, 1]]], axis=1))

    best = min((np.asarray(s) for s in syms), key=score, default=None)
    identity = np.arange(len(heavy))
    if best is None or score(best) > score(identity) - ORDER_MARGIN:
        return pos
    out = pos.copy()
    for k, i in enumerate(heavy):
        out[i] = pos[heavy[best[k]]]
        for h, h_src in zip(hs[k], hs[best[k]]):
            out[h] = pos[h_src]
    return out


@dataclass
class QM9Record:
    """One processed molecule. ``pos`` [N, 3] is the DFT geometry in RDKit atom order."""

    index: int
    smiles: str
    pos: torch.Tensor
    graph: MolGraph
    mol_binary: bytes

    @property
    def mol(self) -> Chem.Mol:
        """RDKit molecule with explicit Hs, stereo from 3D and the DFT geometry as conformer 0."""
        mol = Chem.Mol(self.mol_binary)
        mol.SetProp("_Name", f"qm9_{self.index}")
        return mol


class QM9Dataset(torch.utils.data.Dataset):
    """Processed QM9 split backed by flat arrays; ``ds[i]`` is a :class:`QM9Record`.

    Use :func:`molediff.chem.featurize.collate` on ``[ds.graph(i) for i in ...]`` to batch.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        self.split = meta["split"]
        self.smiles: list[str] = meta["smiles"]
        self.drop_report = DropReport.from_json(meta["drop_report"])
        self.meta = meta
        a = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        self.indices = a["index"]
        self.node_ptr = _ptr(a["num_atoms"])
        self.edge_ptr = _ptr(a["num_edges"])
        self.mol_ptr = _ptr(a["mol_nbytes"])
        # Compact storage (uint8 flags, int16 local edge indices); widened per graph on access.
        self.z, self.pos = a["z"], a["pos"].float()
        self.node_attr, self.edge_index, self.edge_attr = a["node_attr"], a["edge_index"], a["edge_attr"]
        self._mol_bytes = arrays["mol"]

    def __len__(self) -> int:
        return int(self.indices.numel())

    def graph(self, i: int) -> MolGraph:
        """Featurised molecule ``i`` with ``pos`` = DFT geometry."""
        n0, n1 = int(self.node_ptr[i]), int(self.node_ptr[i + 1])
        e0, e1 = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        return MolGraph(z=self.z[n0:n1].long(), node_attr=self.node_attr[n0:n1].float(),
                        edge_index=self.edge_index[:, e0:e1].long(),
                        edge_attr=self.edge_attr[e0:e1].float(), pos=self.pos[n0:n1],
                        smiles=self.smiles[i])

    def to_packed(self):
        """All graphs as a :class:`molediff.data.packed.PackedGraphs` (vectorised batching).

        ``index`` holds the QM9 molecule Index; metadata records split and cache version.
        """
        from molediff.data.packed import PackedGraphs

        return PackedGraphs(
            pos=self.pos, node_attr=self.node_attr.to(torch.uint8),
            edge_index=self.edge_index.to(torch.int32), edge_attr=self.edge_attr.to(torch.uint8),
            node_ptr=self.node_ptr, edge_ptr=self.edge_ptr, index=self.indices.clone(),
            metadata={"dataset": "qm9", "split": self.split, "version": self.meta["version"],
                      "node_feature_dim": int(self.node_attr.shape[1]),
                      "edge_feature_dim": int(self.edge_attr.shape[1])})

    def __getitem__(self, i: int) -> QM9Record:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        g = self.graph(i)
        b0, b1 = int(self.mol_ptr[i]), int(self.mol_ptr[i + 1])
        return QM9Record(int(self.indices[i]), self.smiles[i], g.pos, g,
                         self._mol_bytes[b0:b1].tobytes())

    def __repr__(self) -> str:
        return f"QM9Dataset(split={self.split!r}, molecules={len(self)}, {self.drop_report})"


def _ptr(counts: torch.Tensor) -> torch.Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(counts.long(), 0)
    return ptr


def _pack(items: Sequence[dict], split: str, report: DropReport, seconds: float):
    def cat(key, axis=0, empty=(0,), dtype=np.float32):
        parts = [it[key] for it in items]
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype=dtype)

    arrays = {
        "index": np.array([it["index"] for it in items], dtype=np.int64),
        "num_atoms": np.array([len(it["z"]) for it in items], dtype=np.int64),
        "num_edges": np.array([it["edge_index"].shape[1] for it in items], dtype=np.int64),
        "mol_nbytes": np.array([len(it["mol"]) for it in items], dtype=np.int64),
        "mol": cat("mol", dtype=np.uint8), "z": cat("z", dtype=np.uint8),
        "pos": cat("pos", empty=(0, 3)), "node_attr": cat("node_attr", empty=(0, NODE_FEATURE_DIM), dtype=np.uint8),
        "edge_index": cat("edge_index", axis=1, empty=(2, 0), dtype=np.int16),
        "edge_attr": cat("edge_attr", empty=(0, EDGE_FEATURE_DIM), dtype=np.uint8),
    }
    meta = {"split": split, "version": QM9_CACHE_VERSION, "sources": source_versions(),
            "smiles": [it["smiles"] for it in items],
            "drop_report": report.to_json(), "processing_seconds": seconds}
    return arrays, meta


def _context():
    """``fork`` where available (works from notebooks / stdin scripts; workers only run RDKit
    and numpy), else ``spawn``."""
    methods = get_all_start_methods()
    return get_context("fork" if "fork" in methods else "spawn")


def source_versions() -> dict[str, str]:
    """The RDKit and qm9pack versions that processing uses here; a cache entry is keyed by them too."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        qm9pack = version("qm9pack")
    except PackageNotFoundError:
        qm9pack = "unknown"
    return {"rdkit": rdBase.rdkitVersion, "qm9pack": qm9pack}


def cache_folder(cache_dir: str | Path) -> Path:
    """Where this installation's processed splits live under ``cache_dir``.

    The folder name holds :data:`QM9_CACHE_VERSION` and :func:`source_versions`, so processing by another RDKit
    (bond perception, stereo from 3D, canonical SMILES) or another qm9pack release is never read back as this
    one's: an upgrade processes the splits again (about a minute on 2 cores).
    """
    v = source_versions()
    return Path(cache_dir) / f"{QM9_CACHE_VERSION}_rdkit-{v['rdkit']}_qm9pack-{v['qm9pack']}"


def _stem(cache_dir: Path, split: str, limit: int | None) -> Path:
    return cache_folder(cache_dir) / (split if limit is None else f"{split}_first{limit}")


def prepare_qm9(splits: Sequence[str] = SPLITS, *, limit: int | None = None,
                cache_dir: str | Path | None = None, num_workers: int = 2,
                verbose: bool = False) -> dict[str, DropReport]:
    """Process QM9 splits (all molecules, or the first ``limit`` of each) and write the cache.

    One pass over the CSV files serves all requested splits. ``num_workers > 1`` uses a
    process pool. Returns the :class:`DropReport` of each split.
    """
    splits = [_canon_split(s) for s in splits]
    limit = _check_limit(limit)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir("qm9")
    t0 = time.perf_counter()
    if limit is None:
        raws = (r for r in iter_qm9_raw() if split_of(r.index) in splits)
    else:
        raws = (r for s in splits for r in iter_qm9_raw(s, limit))
    items: dict[str, list[dict]] = {s: [] for s in splits}
    reports = {s: DropReport() for s in splits}
    pool = _context().Pool(num_workers) if num_workers > 1 else None
    try:
        results = pool.imap(process_record, raws, chunksize=64) if pool else map(process_record, raws)
        for k, res in enumerate(results, 1):
            if isinstance(res, dict):
                s = split_of(res["index"])
                items[s].append(res)
                reports[s].kept += 1
                reports[s].hueckel_fallbacks += int(res["hueckel"])
            else:
                s = split_of(res[0])
                reports[s].add(res[0], res[1])
            reports[s].total += 1
            if verbose and k % 5000 == 0:
                print(f"[qm9] {k} molecules in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - t0
    for s in splits:
        arrays, meta = _pack(items[s], s, reports[s], seconds)
        save_arrays(_stem(cache_dir, s, limit), arrays, meta)
        if verbose:
            print(f"[qm9] {s}: {reports[s]}", flush=True)
    return reports


def load_qm9(split: str, limit: int | None = None, cache_dir: str | Path | None = None, *,
             num_workers: int = 2, rebuild: bool = False) -> QM9Dataset:
    """Load a processed QM9 split, processing and caching it first if needed.

    Parameters
    ----------
    split : ``"train"``, ``"valid"`` (alias ``"val"``) or ``"test"``
    limit : keep only the first ``limit`` molecules of the split (in QM9 Index order); taken
        from the full cache if present, else processed and cached separately.
    cache_dir : cache root (default ``$MOLEDIFF_CACHE/qm9`` or ``~/.cache/molediff/qm9``)
    num_workers : processes used when the cache is cold
    rebuild : ignore an existing cache entry

    Returns
    -------
    QM9Dataset (its ``drop_report`` says what was dropped and why)
    """
    split = _canon_split(split)
    limit = _check_limit(limit)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir("qm9")
    full = _stem(cache_dir, split, None)
    if limit is not None and cache_complete(full) and not rebuild:
        arrays, meta = load_arrays(full)
        return _truncate(arrays, meta, limit)
    stem = _stem(cache_dir, split, limit)
    if rebuild or not cache_complete(stem):
        prepare_qm9([split], limit=limit, cache_dir=cache_dir, num_workers=num_workers)
    arrays, meta = load_arrays(stem)
    return QM9Dataset(arrays, meta)


def _truncate(arrays: dict[str, np.ndarray], meta: dict, limit: int) -> QM9Dataset:
    """First ``limit`` molecules of a full split (counting dropped ones, as ``limit`` does)."""
    report = DropReport.from_json(meta["drop_report"])
    order = sorted([(int(i), None) for i in arrays["index"]] + report.dropped)[:limit]
    kept = sum(1 for _, reason in order if reason is None)
    sub = DropReport(total=len(order), kept=kept)
    for i, reason in order:
        if reason is not None:
            sub.add(i, reason)
    n_atoms, n_edges, n_bytes = (int(arrays[k][:kept].sum()) for k in
                                 ("num_atoms", "num_edges", "mol_nbytes"))
    cut = {k: v[:kept] for k, v in arrays.items()
           if k in ("index", "num_atoms", "num_edges", "mol_nbytes")}
    cut.update(z=arrays["z"][:n_atoms], pos=arrays["pos"][:n_atoms],
               node_attr=arrays["node_attr"][:n_atoms], edge_index=arrays["edge_index"][:, :n_edges],
               edge_attr=arrays["edge_attr"][:n_edges], mol=arrays["mol"][:n_bytes])
    meta = dict(meta, smiles=meta["smiles"][:kept], drop_report=sub.to_json())
    return QM9Dataset(cut, meta)
