"""Conformer sampling throughput of the QM9 model on an accelerator without RDKit, scored back on a machine with it.

The GPU box has torch but no RDKit, so the benchmark runs in three steps:

1. ``prepare`` (RDKit and the QM9 cache): the seeded validation molecules of ``sampling_grid.py`` featurised into
   a :class:`molediff.data.packed.PackedGraphs` file, and their stereo-guidance constraints
   (:func:`molediff.chem.stereo_guidance.guidance_constraints`) into a second safetensors file. The CPU time of
   that featurisation is recorded, because the product path pays it per molecule wherever the network runs.
2. ``sample`` (any device, no RDKit): K conformers per molecule with the model's default sampler, steps and
   stereo guidance (:meth:`molediff.chem.model.ConformerModel.sample_graphs`), for each ``--precisions`` entry and
   each ``--max-atoms`` batch size; one untimed warm-up batch first, the device synchronised around the timed
   region. Prints seconds and conformers/s per row and writes every row's coordinates.
3. ``score`` (RDKit): median / mean min-RMSD, coverage and validity of each row's coordinates against the DFT
   geometries, next to ETKDGv3 on the same molecules with the same K on this machine.

Usage::

    python benchmarks/device_sampling.py prepare --num-mols 1000 --seed 1 --out .carry/sampling
    python benchmarks/device_sampling.py sample --data .carry/sampling --device cuda -k 10 \\
        --precisions fp32,bf16 --max-atoms 20000,200000 --out OUT/samples.safetensors
    python benchmarks/device_sampling.py score --data .carry/sampling --samples OUT/samples.safetensors --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor

from molediff.chem.model import load_conformer_model
from molediff.chem.stereo_guidance import GuidanceConstraints
from molediff.data.packed import PackedGraphs

GRAPHS = "graphs.safetensors"
CONSTRAINTS = "constraints.safetensors"


# ----------------------------------------------------------------------------- prepare (RDKit)
def prepare(args: argparse.Namespace) -> int:
    """Featurise the seeded validation molecules and their guidance constraints into ``args.out``."""
    from molediff.chem.featurize import featurize
    from molediff.chem.stereo_guidance import guidance_constraints, guidance_options

    sys.path.insert(0, str(Path(__file__).parent))
    from sampling_grid import select_validation_molecules

    model = load_conformer_model(args.model)
    mols = select_validation_molecules(args.num_mols, args.seed)
    g = guidance_options()
    t0 = time.perf_counter()
    graphs, parts = [], []
    for m in mols:
        graph = featurize(m.template, elements=model.config.elements)
        graphs.append((torch.zeros(graph.z.numel(), 3), graph.node_attr, graph.edge_index, graph.edge_attr))
        parts.append(guidance_constraints(m.template, g["clash_factor"], g["aromatic_rings"], g["bound_slack"]))
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"num_mols": len(mols), "seed": args.seed, "split": "valid", "featurise_s": seconds,
            "machine": platform.processor() or platform.machine()}
    PackedGraphs.from_graphs(graphs, [m.index for m in mols], metadata=meta).save(out / GRAPHS)
    save_constraints(parts, out / CONSTRAINTS, meta)
    print(f"{len(mols)} validation molecules (seed {args.seed}) -> {out}; featurisation and constraints "
          f"{seconds:.1f} s on this CPU ({1e3 * seconds / len(mols):.1f} ms per molecule)")
    return 0


def save_constraints(parts: list[GuidanceConstraints], path: Path, meta: dict | None = None) -> None:
    """Write per-molecule constraints (local atom indices) as one safetensors file: each field's rows of all
    molecules concatenated, plus ``<field>.count`` ``[M]``, the rows of each molecule."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    for f in fields(GuidanceConstraints):
        rows = [getattr(p, f.name) for p in parts]
        tensors[f.name] = torch.cat(rows).contiguous()
        tensors[f"{f.name}.count"] = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    save_file(tensors, str(path), metadata={"molediff": json.dumps(meta or {})})


# ----------------------------------------------------------------------------- sample (no RDKit)
def load_constraints(path: Path) -> list[GuidanceConstraints]:
    """The per-molecule constraints written by :func:`save_constraints` (local atom indices)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    names = [f.name for f in fields(GuidanceConstraints)]
    split = {n: torch.split(tensors[n], tensors[f"{n}.count"].tolist()) for n in names}
    return [GuidanceConstraints(**{n: split[n][i] for n in names}) for i in range(len(split[names[0]]))]


def conformer_chunks(num_nodes: Tensor, k: int, max_atoms: int) -> list[Tensor]:
    """Molecule index of every (molecule, conformer) job, molecule-major, cut into runs of at most ``max_atoms``
    atoms (a single larger job gets a run of its own).

    Shapes
    ------
    num_nodes: ``[M]`` → a list of ``[B_j]`` long tensors whose concatenation is ``arange(M).repeat_interleave(k)``.
    """
    jobs = torch.arange(num_nodes.numel()).repeat_interleave(k)
    chunks, start, atoms = [], 0, 0
    for i, n in enumerate(num_nodes[jobs].tolist()):
        if i > start and atoms + n > max_atoms:
            chunks.append(jobs[start:i])
            start, atoms = i, 0
        atoms += n
    chunks.append(jobs[start:])
    return chunks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_chunk(model, store: PackedGraphs, constraints: list[GuidanceConstraints], which: Tensor,
                  device: torch.device, generator: torch.Generator, precision: str) -> Tensor:
    batch = store.batch(which).to(device)
    sizes = store.num_nodes[which].tolist()
    guide = GuidanceConstraints.concat([constraints[i] for i in which.tolist()], sizes)
    return model.sample_graphs(batch.cond(), generator=generator, constraints=guide, precision=precision)


def sample(args: argparse.Namespace) -> int:
    """Time guided sampling of every prepared molecule ``-k`` times per precision and batch size."""
    from safetensors.torch import save_file

    data = Path(args.data)
    store = PackedGraphs.load(data / GRAPHS)
    constraints = load_constraints(data / CONSTRAINTS)
    device = torch.device(args.device)
    model = load_conformer_model(args.model, device=device).eval()
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    print(f"# device_sampling: {len(store)} molecules x K={args.k}, {model.config.default_sampler} "
          f"{model.config.default_steps} steps, stereo guidance on; device {name}, torch {torch.__version__}")
    print("| precision | max atoms per batch | batches | seconds | conformers/s |")
    print("|---|---|---|---|---|")
    out: dict[str, Tensor] = {}
    for precision in args.precisions.split(","):
        for max_atoms in (int(v) for v in args.max_atoms.split(",")):
            chunks = conformer_chunks(store.num_nodes, args.k, max_atoms)
            generator = torch.Generator(device=device)
            generator.manual_seed(args.seed)
            _sample_chunk(model, store, constraints, chunks[0], device, generator, precision)  # warm-up
            generator.manual_seed(args.seed)
            _sync(device)
            t0 = time.perf_counter()
            pos = [_sample_chunk(model, store, constraints, c, device, generator, precision) for c in chunks]
            _sync(device)
            seconds = time.perf_counter() - t0
            n = len(store) * args.k
            print(f"| {precision} | {max_atoms} | {len(chunks)} | {seconds:.2f} | {n / seconds:.1f} |")
            out[f"{precision}/{max_atoms}"] = torch.cat(pos).float().cpu()
    meta = {"k": args.k, "seed": args.seed, "device": name, "torch": torch.__version__,
            "sampler": model.config.default_sampler, "steps": model.config.default_steps}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, args.out, metadata={"molediff": json.dumps(meta)})
    return 0


# ----------------------------------------------------------------------------- score (RDKit)
def score(args: argparse.Namespace) -> int:
    """Score each sampled row against DFT and run ETKDGv3 on the same molecules here."""
    from safetensors import safe_open

    from molediff.chem.cli_evaluate import machine_info
    from molediff.chem.evaluation import aggregate, run_etkdg, score_coordinates

    sys.path.insert(0, str(Path(__file__).parent))
    from sampling_grid import select_validation_molecules

    data = Path(args.data)
    store = PackedGraphs.load(data / GRAPHS)
    meta = store.metadata
    mols = select_validation_molecules(meta["num_mols"], meta["seed"])
    if [m.index for m in mols] != store.index.tolist():
        raise SystemExit(f"{data / GRAPHS} does not hold the seeded draw it names (seed {meta['seed']})")
    sizes = store.num_nodes.tolist()
    with safe_open(args.samples, framework="pt") as f:
        info = json.loads((f.metadata() or {}).get("molediff", "{}"))
        rows = {key: f.get_tensor(key) for key in f.keys()}
    k = int(info["k"])
    print(f"# device_sampling score: {len(mols)} validation molecules (seed {meta['seed']}), K={k}; samples from "
          f"{info.get('device')} (torch {info.get('torch')}); featurisation + constraints "
          f"{1e3 * meta['featurise_s'] / len(mols):.1f} ms per molecule on the CPU that prepared them")
    print("# this machine: " + ", ".join(f"{key}={v}" for key, v in machine_info(args.threads).items()))
    print("| method | median minRMSD | mean minRMSD | cov@0.5 | cov@0.1 | valid |")
    print("|---|---|---|---|---|---|")
    for key, pos in rows.items():
        per_conf = torch.split(pos.double(), [n for n in sizes for _ in range(k)])
        coords = [torch.stack(per_conf[i * k:(i + 1) * k]).numpy() for i in range(len(mols))]
        row = aggregate(key, score_coordinates(mols, coords), k, 1.0)  # timed on the device, not here
        print(f"| model {key} | {row.median_min_rmsd:.3f} | {row.mean_min_rmsd:.3f} | {row.coverage_05:.3f} "
              f"| {row.coverage_01:.3f} | {row.valid_fraction:.4f} |")
    coords, seconds = run_etkdg(mols, k, seed=meta["seed"], threads=args.threads)
    row = aggregate("ETKDGv3", score_coordinates(mols, coords), k, seconds)
    print(f"| ETKDGv3 ({args.threads} threads here, {row.conformers_per_s:.1f} conf/s) | {row.median_min_rmsd:.3f} "
          f"| {row.mean_min_rmsd:.3f} | {row.coverage_05:.3f} | {row.coverage_01:.3f} | {row.valid_fraction:.4f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="featurise seeded validation molecules (needs RDKit)")
    p.add_argument("--num-mols", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default=None, help="model whose elements featurise (default: shipped)")
    p.add_argument("--out", required=True, help="folder for graphs.safetensors and constraints.safetensors")
    s = sub.add_parser("sample", help="time sampling on a device (no RDKit needed)")
    s.add_argument("--data", required=True)
    s.add_argument("--model", default=None, help="exported model (default: shipped)")
    s.add_argument("--device", default="cuda")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--precisions", default="fp32,bf16")
    s.add_argument("--max-atoms", default="20000", help="comma-separated atoms per network batch")
    s.add_argument("--threads", type=int, default=None, help="torch threads on a CPU device")
    s.add_argument("--out", required=True, help="safetensors file for the coordinates of every row")
    c = sub.add_parser("score", help="score sampled coordinates against DFT, with ETKDGv3 here (needs RDKit)")
    c.add_argument("--data", required=True)
    c.add_argument("--samples", required=True)
    c.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    return {"prepare": prepare, "sample": sample, "score": score}[args.step](args)


if __name__ == "__main__":
    raise SystemExit(main())
