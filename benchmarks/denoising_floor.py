"""Where the conformer model's error comes from: denoise the DFT geometry itself from a noise level σ₀.

Start from the reference (DFT) geometry plus zero-centre-of-mass noise of level σ₀ and run the model's
sampler on the tail ``σ₀ → 0`` of its grid (unguided: the network alone). A perfect denoiser brings every
molecule back to its reference; the heavy-atom RMSD left over is the network's error below σ₀. Small σ₀
measures local precision (bond lengths, angles); larger σ₀ the decisions between nearby local minima
(ring puckers, torsions). Compare with the model's min-RMSD from pure noise (``conformers_qm9.py``) and
with ETKDG's, which have no such split.

Columns: ``noisy`` the RMSD of the starting point; ``one step`` that of a single denoiser call
``D(x, σ₀)``; ``sampled`` after the sampler's tail (one draw per molecule); ``min of K`` the best of K
draws (if close to ``sampled``, the error is a bias of the network, not a spread of its samples).

Usage: ``python benchmarks/denoising_floor.py [--split valid] [--num-mols 200] [-k 5] [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import select_molecules
from molediff.chem.featurize import collate, featurize
from molediff.chem.metrics import best_rmsd
from molediff.core.samplers import SAMPLERS
from molediff.core.schedules import karras_sigmas
from molediff.data.qm9 import load_qm9
from molediff.nn.precision import edge_precision


def heavy_rmsds(mols: list[Chem.Mol], pos: torch.Tensor, sizes: list[int]) -> np.ndarray:
    """Symmetry-aware heavy-atom RMSD (Å) of each molecule's rows of ``pos`` ``[N, 3]`` to its conformer 0."""
    out = []
    for mol, xyz in zip(mols, torch.split(pos.detach().double().cpu(), sizes)):
        probe = Chem.Mol(mol)
        probe.GetConformer().SetPositions(xyz.numpy())
        out.append(best_rmsd(probe, mol))
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: shipped)")
    parser.add_argument("--split", choices=("test", "valid"), default="valid")
    parser.add_argument("--num-mols", type=int, default=200)
    parser.add_argument("-k", "--num-draws", type=int, default=5)
    parser.add_argument("--sigmas", default="0.05,0.1,0.2,0.4,0.8,1.6")
    parser.add_argument("--tail-steps", type=int, default=8, help="sampler steps from σ₀ to σ_min")
    parser.add_argument("--sampler", default=None, help="default: the model's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)

    loaded = load_model_for_evaluation(args.model)
    model = loaded.model.eval()
    sampler = args.sampler or model.config.default_sampler
    picks = select_molecules(load_qm9(args.split), args.num_mols, seed=args.seed)
    mols = [m.mol for m in picks]
    graphs = [featurize(m, elements=model.config.elements) for m in mols]
    sizes = [g.z.numel() for g in graphs]
    print(f"# denoising_floor, model={loaded.source} (step {loaded.step}), QM9 {args.split}, {len(mols)} molecules, "
          f"sampler {sampler} with {args.tail_steps} steps from σ₀, K={args.num_draws}, seed {args.seed}, "
          f"precision {model.resolved_precision()}")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.threads).items()))
    print("\n| σ₀ (Å) | noisy median | one step median | sampled median | sampled mean | min of K median "
          "| min of K mean | s |")
    print("|---|---|---|---|---|---|---|---|")

    batch = collate(graphs)
    cond = {"node_attr": batch.node_attr, "edge_index": batch.edge_index, "edge_attr": batch.edge_attr,
            "batch": batch.batch}
    space = model.noise_space(batch.batch, batch.edge_index, batch.edge_attr)  # the model's own prior
    x_ref = space.project(torch.cat([torch.as_tensor(m.GetConformer().GetPositions()) for m in mols]).float())
    generator = torch.Generator().manual_seed(args.seed)
    for sigma0 in (float(s) for s in args.sigmas.split(",")):
        t0 = time.perf_counter()
        grid = karras_sigmas(args.tail_steps, model.config.sigma_min, sigma0, model.config.rho, dtype=torch.float32)
        draws, noisy, one_step = [], None, None
        with torch.no_grad(), edge_precision(model, model.resolved_precision()):
            for k in range(args.num_draws):
                x = x_ref + sigma0 * space.randn(x_ref.shape, generator=generator)
                if k == 0:
                    noisy = heavy_rmsds(mols, x, sizes)
                    one_step = heavy_rmsds(mols, model(x, torch.full((x.shape[0],), sigma0), **cond), sizes)
                out = SAMPLERS[sampler](model, x, grid, space=space, generator=generator, **cond)
                draws.append(heavy_rmsds(mols, out, sizes))
        draws_arr = np.stack(draws)
        best = draws_arr.min(axis=0)
        print(f"| {sigma0:g} | {np.median(noisy):.3f} | {np.median(one_step):.3f} | {np.median(draws_arr[0]):.3f} "
              f"| {draws_arr[0].mean():.3f} | {np.median(best):.3f} | {best.mean():.3f} "
              f"| {time.perf_counter() - t0:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
