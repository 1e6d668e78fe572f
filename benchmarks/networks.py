"""Throughput of the molediff score networks at QM9 size (molecules/s), eager and torch.compile.

Random molecules of ~18 atoms (9 heavy atoms + hydrogens) with a bonded-style graph (a random spanning tree,
both directions, 4 bond-type features) plus radius edges. Prints one table row per network and mode: forward
(no grad) and forward+backward throughput, medians over repeats.

``egnn_fc`` is the shipped conformer model's network (EGNN 4 x 128 on the fully connected graph); its modes
are the execution paths of the same function: ``sparse`` (edge list, gathers and scatters), ``dense-whole``
(per-size dense blocks, :mod:`molediff.nn.dense_blocks`, each block in one piece), ``dense`` (the default: the
same blocks, forward without gradients in cache-sized runs of graphs, ``EGNN.dense_chunk_pairs``) and
``dense-bf16`` (plus bf16 per-edge MLPs, :mod:`molediff.nn.precision`). Training (forward + backward) always runs
whole blocks, so ``dense-whole`` and ``dense`` differ only in the forward column.

    python3 benchmarks/networks.py                       # CPU, batch 128
    python3 benchmarks/networks.py --nets egnn_fc --threads 2
    python3 benchmarks/networks.py --device cuda --batch 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from molediff.nn.egnn import EGNN
from molediff.nn.gfn import GraphFieldNetwork
from molediff.nn.precision import edge_precision
from molediff.nn.tensor_field import TensorFieldNetwork

NODE_DIM, EDGE_DIM, RADIUS = 10, 4, 2.5


def make_batch(num_mols: int, atoms: int, device: torch.device, generator: torch.Generator) -> dict:
    sizes = torch.randint(atoms - 4, atoms + 5, (num_mols,), generator=generator)
    batch = torch.repeat_interleave(torch.arange(num_mols), sizes)
    ptr = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), sizes]), 0)
    src, dst = [], []
    for k in range(num_mols):
        n = int(sizes[k])
        parent = (torch.rand(n - 1, generator=generator) * torch.arange(1, n)).long()  # random tree
        src.append(ptr[k] + torch.arange(1, n))
        dst.append(ptr[k] + parent)
    s, d = torch.cat(src), torch.cat(dst)
    edge_index = torch.cat([torch.stack([s, d]), torch.stack([d, s])], dim=1)
    n = len(batch)
    inp = {
        "x": torch.randn(n, 3, generator=generator) * 1.5,
        "c_noise": torch.randn(n, generator=generator),
        "node_attr": torch.nn.functional.one_hot(torch.randint(0, NODE_DIM, (n,), generator=generator), NODE_DIM).float(),
        "batch": batch,
        "edge_index": edge_index,
        "edge_attr": torch.nn.functional.one_hot(
            torch.randint(0, EDGE_DIM, (edge_index.shape[1],), generator=generator), EDGE_DIM
        ).float(),
    }
    return {k: v.to(device) for k, v in inp.items()}


def timeit(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--atoms", type=int, default=18)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--nets", default="egnn,gfn,tfn")
    ap.add_argument("--paths", default="sparse,dense-whole,dense,dense-bf16",
                    help="execution paths of egnn_fc to time (dense-bf16 is slow where bf16 is emulated)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    inp = make_batch(args.batch, args.atoms, device, gen)
    print(f"seed={args.seed} torch={torch.__version__} device={device} batch={args.batch} atoms~{args.atoms} "
          f"nodes={inp['x'].shape[0]} bonds={inp['edge_index'].shape[1]} radius={RADIUS}")
    print(f"cpu={platform.processor() or platform.machine()} cores={os.cpu_count()} threads={torch.get_num_threads()}"
          + (f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    builders = {
        "egnn": lambda: EGNN(NODE_DIM, EDGE_DIM, radius=RADIUS),
        "gfn": lambda: GraphFieldNetwork(NODE_DIM, EDGE_DIM, radius=RADIUS),
        "tfn": lambda: TensorFieldNetwork(NODE_DIM, EDGE_DIM, radius=RADIUS),
        "egnn_fc": lambda: EGNN(NODE_DIM, EDGE_DIM, hidden=128, num_layers=4, fully_connected=True),
    }
    default = "default"  # the network's own dense_chunk_pairs
    execution_paths = {"sparse": (False, "fp32", None), "dense-whole": (True, "fp32", None),
                       "dense": (True, "fp32", default), "dense-bf16": (True, "bf16", default)}
    cond = {k: v for k, v in inp.items() if k not in ("x", "c_noise")}
    print(f"{'network':<20}{'params':>10}{'mode':>12}{'fwd mol/s':>12}{'fwd+bwd mol/s':>15}  note")
    for name in args.nets.split(","):
        net = builders[name]().to(device)
        params = sum(p.numel() for p in net.parameters())
        chunk_default = getattr(net, "dense_chunk_pairs", None)
        if getattr(net, "fully_connected", False):
            modes = [m for m in args.paths.split(",") if m in execution_paths]
        else:
            modes = ["eager"] + ([] if args.no_compile else ["compile"])
        for mode in modes:
            note = ""
            try:
                model = torch.compile(net) if mode == "compile" else net
                dense, precision, chunk_pairs = execution_paths.get(mode, (None, "fp32", None))
                if dense is not None:
                    net.dense_execution = dense
                    net.dense_chunk_pairs = chunk_default if chunk_pairs == default else chunk_pairs

                def fwd():
                    with torch.no_grad(), edge_precision(net, precision):
                        model(inp["x"], inp["c_noise"], **cond)

                def fwd_bwd():
                    with edge_precision(net, precision):
                        model(inp["x"], inp["c_noise"], **cond).square().mean().backward()

                t_f = timeit(fwd, args.repeats, args.warmup, device)
                t_fb = timeit(fwd_bwd, args.repeats, args.warmup, device)
                f_s, fb_s = f"{args.batch / t_f:12.1f}", f"{args.batch / t_fb:15.1f}"
            except Exception as exc:  # report, do not hide, compile failures
                f_s, fb_s = f"{'failed':>12}", f"{'failed':>15}"
                note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
            print(f"{type(net).__name__:<20}{params:>10,}{mode:>12}{f_s}{fb_s}  {note}", flush=True)


if __name__ == "__main__":
    main()
