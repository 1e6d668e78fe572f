"""``molediff conformers``: SMILES / SDF in, 3D conformers out (SDF with properties or extended XYZ).

Examples
--------
    molediff conformers "C[C@H](N)C(=O)O" -n 5 --seed 0 > ala.sdf
    molediff conformers -i drugs.smi -o drugs.sdf -n 10 --failures failed.csv --keep-going
    molediff conformers -i drugs.smi -o drugs.sdf --resume           # after a crash
    cat drugs.smi | molediff conformers -i - -o drugs.sdf.gz          # SMILES from stdin, gzip output
    molediff conformers -i drugs.smi -o drugs.sdf --workers 2        # 2 local processes, 1 thread each
    torchrun --nproc-per-node 4 -m molediff conformers -i big.smi -o big.sdf --device cuda

Exit status: 0 when every molecule got conformers (or with ``--keep-going``), 1 when some
molecule failed or the input holds no molecule (then no file is created or changed), 2 for usage
errors (bad options, unreadable input file, model not found).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import json
import os
import sys
import time

__all__ = ["add_arguments", "run"]

MAX_REPORTED = 20  # failures and warnings printed one by one; the rest are counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``molediff conformers`` on ``parser``."""
    parser.add_argument("smiles", nargs="*", help="SMILES on the command line (instead of -i)")
    io_ = parser.add_argument_group("input / output")
    io_.add_argument("-i", "--input",
                     help=".smi (SMILES [name]), .csv/.tsv (header) or .sdf; may be .gz; '-': SMILES lines from "
                          "stdin (no --resume, --workers or torchrun: stdin cannot be read twice)")
    io_.add_argument("-o", "--output",
                     help=".sdf or .xyz (extended XYZ), or .sdf.gz / .xyz.gz (gzip, one member per committed "
                          "batch; --resume works the same); default or '-': SDF on stdout (no --resume; "
                          "messages go to stderr)")
    io_.add_argument("--smiles-column", help="CSV column with SMILES (default: auto-detect)")
    io_.add_argument("--id-column", help="CSV column with IDs (default: id/name/title if present)")
    io_.add_argument("--failures", help="write failed inputs to this report (.csv or .json)")
    io_.add_argument("--resume", action="store_true", help="continue an interrupted run of the same output")
    io_.add_argument("--keep-going", action="store_true", help="exit 0 even when some molecules failed")
    io_.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    gen = parser.add_argument_group("generation")
    gen.add_argument("-n", "--num-confs", type=int, default=10, help="conformers per molecule (default 10)")
    gen.add_argument("--seed", type=int, help="random seed (default: drawn and recorded in the output); a "
                     "molecule's conformers depend on it, the molecule and the sampling options, not on "
                     "--batch-size, --workers or the rest of the input")
    gen.add_argument("--model", help="'etkdg' (RDKit baseline), a checkpoint path or name (default: shipped model)")
    gen.add_argument("--sampler", help="sampling algorithm of the model (default: the model's, chosen on validation)")
    gen.add_argument("--steps", type=int,
                     help="sampling steps (default: the model's; with --start etkdg/mixed, 10 refinement steps, "
                          "the mixed prior half keeping the model's)")
    gen.add_argument("--start", choices=("prior", "etkdg", "mixed"), default="prior",
                     help="'etkdg': refine ETKDG conformers with the model (partial diffusion) instead of "
                          "sampling from noise; more accurate local geometry, slower. 'mixed': half of the "
                          "conformers from noise, half refined from ETKDG; best coverage (default prior)")
    gen.add_argument("--sigma-start", type=float,
                     help="with --start etkdg/mixed: noise level (A) the ETKDG conformers are raised to (default 0.6)")
    gen.add_argument("--prior-share", type=float,
                     help="with --start mixed: share of the conformers sampled from noise (default 0.5)")
    gen.add_argument("--draws", type=float, metavar="F",
                     help="draw F times as many conformers (F >= 1, e.g. 2) and keep the least strained: lowest "
                          "MMFF94 energy as drawn, the coordinates unchanged. Closer to DFT geometries, F times the "
                          "sampling time (default: off)")
    gen.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: the model's choice)")
    gen.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                     help="network precision: bf16 per-edge work is ~2x faster where native (default auto)")
    gen.add_argument("--batch-size", type=int, default=64, help="molecules per model call and per commit")
    gen.add_argument("--workers", type=int, default=1,
                     help="CPU cores to use: the job runs as that many local processes with one thread each, "
                          "as under torchrun (needs -o); with --model etkdg, RDKit threads (default 1)")
    gen.add_argument("--relax", choices=("mmff", "xtb"), help="relax conformers with MMFF94 or GFN2-xTB")
    gen.add_argument("--polish", action="store_true",
                     help="relax each conformer with MMFF94, then let the model redraw its local geometry from "
                          "0.1 A of noise: MMFF94's torsions, DFT-like bonds and angles; the most accurate "
                          "setting against DFT geometries (no energies; not with --relax)")
    gen.add_argument("--prune-rms", type=float, help="drop conformers within this heavy-atom RMSD (A)")
    gen.add_argument("--on-invalid", choices=("resample", "flag", "drop"), default="resample",
                     help="conformers failing stereo/geometry checks (default resample)")
    gen.add_argument("--max-resample-rounds", type=int, default=3)
    gen.add_argument("--oversize", choices=("model", "etkdg"), default="model",
                     help="molecules larger than any the model was trained on: sample them with the model, "
                          "with a warning, or embed them with ETKDGv3 (default model)")
    gen.add_argument("--unsupported", choices=("error", "etkdg"), default="error",
                     help="molecules with an element the model was not trained on: fail with an error naming "
                          "it, or embed them with ETKDGv3 (default error)")
    pol = parser.add_argument_group("input policy")
    pol.add_argument("--fragments", choices=("largest", "fail"), default="largest",
                     help="several fragments (salts): keep the largest or fail (default largest)")
    pol.add_argument("--max-atoms", type=int, help="skip molecules with more atoms (hydrogens included)")
    pol.add_argument("--allow-radicals", action="store_true", help="accept radicals with a warning")


def _err(msg: str) -> None:
    print(f"molediff conformers: {msg}", file=sys.stderr)


def _options(args, seed: int) -> dict:
    from molediff.chem.io_read import STDIN

    keys = ("input", "num_confs", "model", "sampler", "steps", "relax", "prune_rms", "on_invalid",
            "max_resample_rounds", "fragments", "max_atoms", "allow_radicals", "smiles_column", "id_column",
            "batch_size", "precision", "start", "sigma_start")
    opts = {k: getattr(args, k) for k in keys}
    opts["input"] = (args.input if args.input == STDIN else os.path.abspath(args.input)) if args.input \
        else list(args.smiles)
    opts["seed"] = seed
    if args.prior_share is not None:  # absent unless given, so runs from before the option still resume
        opts["prior_share"] = args.prior_share
    if args.polish:  # likewise
        opts["polish"] = True
    if args.draws is not None:  # likewise
        opts["draws"] = args.draws
    if args.oversize != "model":  # likewise absent at its default, so older runs still resume
        opts["oversize"] = args.oversize
    if args.unsupported != "error":
        opts["unsupported"] = args.unsupported
    return opts


def _saved_seed(state_path: str) -> int | None:
    try:
        with open(state_path, encoding="utf-8") as f:
            return json.load(f)["options"]["seed"]
    except (OSError, ValueError, KeyError):
        return None


def _workers_problem(args: argparse.Namespace, distributed: bool) -> str | None:
    """Why ``--workers N`` cannot run the model's worker processes here, or ``None``."""
    from molediff.chem.io_read import STDIN

    if distributed:
        return "--workers inside a torchrun job: give torchrun more processes instead"
    if args.device is not None and not args.device.startswith("cpu"):
        return f"--workers runs CPU processes; drop it to sample on {args.device}"
    if not args.output:
        return "--workers needs -o OUTPUT (the workers write shards that are merged into it)"
    if args.input == STDIN:
        return "--workers cannot share stdin (-i -) between its processes; give -i FILE"
    if getattr(args, "raw_argv", None) is None:
        return "--workers needs the command line (args.raw_argv)"
    return None


def _argument_problem(args: argparse.Namespace) -> str | None:
    """A usage error in the options or the files they name, or ``None``; cheap, checked before any work.

    Covers the input (given once, known format, present, readable up to its first record), the output
    format and the folders of ``-o`` and ``--failures``, and the numeric options.
    """
    from molediff.chem.io_read import STDIN, input_format
    from molediff.chem.io_write import output_format

    if bool(args.smiles) == bool(args.input):
        return "give SMILES on the command line or -i FILE (exactly one of them)"
    if args.resume and not args.output:
        return "--resume needs -o FILE: output to stdout leaves nothing to resume"
    if args.resume and args.input == STDIN:
        return "--resume cannot re-read stdin (-i -): save the input to a file and give -i FILE to runs you may " \
               "need to resume"
    if args.num_confs < 1 or args.batch_size < 1 or args.workers < 1:
        return "--num-confs, --batch-size and --workers must be >= 1"
    problem = _option_value_problem(args)
    if problem:
        return problem
    try:
        if args.input and args.input != STDIN:
            input_format(args.input)
            if not os.path.isfile(args.input):
                return f"input file not found: {args.input}"
            _check_readable(args)
        if args.output:
            output_format(args.output)
    except ValueError as err:
        return str(err)
    for option, path in (("-o", args.output), ("--failures", args.failures)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            return f"{option} {path}: folder {folder} does not exist or is not writable"
    named = [(option, path, os.path.realpath(path)) for option, path in
             (("-i", args.input), ("-o", args.output), ("--failures", args.failures)) if path and path != STDIN]
    for (opt_a, path_a, real_a), (opt_b, path_b, real_b) in itertools.combinations(named, 2):
        if real_a == real_b:
            return f"{opt_a} {path_a} and {opt_b} {path_b} are the same file; writing it would destroy the other"
    return None


def _option_value_problem(args: argparse.Namespace) -> str | None:
    """A usage error for an option value out of range (or an unknown sampler), or ``None``."""
    from molediff.core.samplers import SAMPLERS

    if args.sampler is not None and args.sampler not in SAMPLERS:
        return f"unknown --sampler {args.sampler!r}; choose from {', '.join(sorted(SAMPLERS))}"
    if args.steps is not None and args.steps < 1:
        return f"--steps must be >= 1, got {args.steps}"
    if args.seed is not None and args.seed < 0:
        return f"--seed must be >= 0, got {args.seed}"
    if args.sigma_start is not None and not 0 < args.sigma_start < float("inf"):
        return f"--sigma-start must be > 0 (Å) and finite, got {args.sigma_start}"
    if args.prune_rms is not None and not args.prune_rms >= 0:
        return f"--prune-rms must be >= 0 (Å), got {args.prune_rms}"
    if args.max_resample_rounds < 0:
        return f"--max-resample-rounds must be >= 0, got {args.max_resample_rounds}"
    if args.max_atoms is not None and args.max_atoms < 1:
        return f"--max-atoms must be >= 1, got {args.max_atoms}"
    if args.draws is not None and not 1 <= args.draws < float("inf"):
        return f"--draws must be a number >= 1, got {args.draws}"
    if args.draws is not None and _is_etkdg(args.model):
        return "--draws ranks a diffusion model's draws; drop --model etkdg"
    if args.polish and args.relax:
        return f"--polish relaxes with MMFF94 itself, and --relax {args.relax} afterwards would undo the polish"
    if args.polish and _is_etkdg(args.model):
        return "--polish needs a diffusion model to polish with; drop --model etkdg (--start etkdg refines " \
               "ETKDG conformers with the model)"
    return None


def _check_readable(args: argparse.Namespace) -> None:
    """Read the input file up to its first record, so that a file-level problem (a CSV without the named
    SMILES column, ...) is a usage error before any output exists.

    Raises
    ------
    InputFileError
        A ``ValueError`` naming the file and the reason (a missing column, a corrupt ``.gz``, no permission).
        An empty file is left to the main loop.
    """
    from molediff.chem.errors import EmptyInputError, InputFileError
    from molediff.chem.io_read import read_inputs

    records = read_inputs(args.input, smiles_column=args.smiles_column, id_column=args.id_column)
    try:
        next(records, None)
    except EmptyInputError:
        pass
    except InputFileError as err:
        raise InputFileError(f"{args.input}: {err}") from None
    except OSError as err:  # a corrupt .gz, no permission (undecodable bytes are per-record failures)
        raise InputFileError(f"{args.input}: cannot read it: {err}") from None
    finally:
        records.close()


def _is_etkdg(model: str | None) -> bool:
    return model is not None and model.lower() == "etkdg"


def run(args: argparse.Namespace) -> int:
    """Run ``molediff conformers``; returns the exit status.

    ``--workers N`` with a diffusion model runs the job as N local ranks
    (:func:`molediff.chem.local_ranks.run_local_ranks`, which needs ``args.raw_argv``, set by
    :func:`molediff.cli.main`); with ETKDG it sets RDKit's thread count.
    """
    from molediff.chem import distributed_run as dr

    if args.output == "-":  # SDF on stdout, as without -o
        args.output = None
    if args.workers > 1 and not _is_etkdg(args.model):
        problem = _workers_problem(args, dr.dist_context().distributed) or _argument_problem(args)  # once, here
        if problem:
            _err(problem)
            return 2
        records, empty = _open_records(args)
        if empty:
            _err(empty)
            return 1
        records.close()
        from molediff.chem.local_ranks import run_local_ranks, without_option

        return run_local_ranks(without_option(args.raw_argv, "--workers"), args.workers)
    try:
        return _run(args)
    except KeyboardInterrupt:  # while loading the model or finishing (the loop reports its own)
        _err(f"interrupted; {_saved_hint(args)}")
        return 130


def _open_records(args: argparse.Namespace):
    """The input records, checked to hold at least one before any file is touched.

    Returns
    -------
    records : iterator of InputRecord or None
        Every record, the first one included (an error past the first is raised while iterating).
    empty : str or None
        The message for an input without records (``records`` is then ``None``).
    """
    from molediff.chem.errors import EmptyInputError, InputFileError
    from molediff.chem.io_read import STDIN, read_inputs, records_from_strings

    if not args.input:
        return records_from_strings(args.smiles), None
    if args.input == STDIN and not args.quiet and _interactive_stdin():
        _err("reading SMILES from stdin, one per line (SMILES [name]); end with Ctrl-D")
    records = read_inputs(args.input, smiles_column=args.smiles_column, id_column=args.id_column)
    try:
        first = next(records)
    except EmptyInputError as err:  # read_inputs raises it for an input without records
        return None, f"{err}; nothing to do, no file was created or changed"
    except (InputFileError, OSError) as err:  # raised again where the main loop reports read errors
        def failing(err=err):
            raise err
            yield
        return failing(), None
    return _chain_closing(first, records), None


def _chain_closing(first, records):
    """``first`` then the rest of ``records``; closing it closes ``records`` (and so the input file)."""
    try:
        yield first
        yield from records
    finally:
        records.close()


def _interactive_stdin() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # no stdin, a closed one, or a test's stand-in
        return False


def _saved_hint(args: argparse.Namespace) -> str:
    """What an interrupted run leaves and how to finish it."""
    from molediff.chem.io_read import STDIN

    if not args.output:
        return "the molecules written to stdout are complete records"
    if args.input == STDIN:
        return f"completed molecules are saved in {args.output}; stdin cannot be read again, so --resume cannot " \
               "finish this run"
    return "completed molecules are saved, rerun with --resume to finish"


def _run(args: argparse.Namespace) -> int:
    import torch

    from molediff.chem import distributed_run as dr
    from molediff.chem.errors import InputFileError, MissingDependencyError
    from molediff.chem.generate import generate_conformers_batch, resolve_model
    from molediff.chem.io_read import STDIN, count_records
    from molediff.chem.io_write import CheckpointedWriter, StreamWriter, output_compressed, output_format
    from molediff.chem.sampler_protocol import EtkdgSampler
    from molediff.training.checkpoint import CheckpointError

    problem = _argument_problem(args)
    if problem:
        _err(problem)
        return 2
    ctx = dr.dist_context()
    if ctx.distributed and not args.output:
        _err("distributed runs need -o OUTPUT")
        return 2
    if ctx.distributed and args.input == STDIN:
        _err("distributed runs cannot share stdin (-i -) between ranks; give -i FILE")
        return 2
    records, empty = _open_records(args)  # before the output, the progress file or the journal is touched
    if empty:
        if ctx.is_main:
            _err(empty)
        return 1
    try:
        fmt = output_format(args.output) if args.output else "sdf"
        if args.relax == "xtb":
            from molediff.chem.relax import require_xtb
            require_xtb()
        device = args.device
        if device == "cuda" and ctx.distributed:
            device = f"cuda:{ctx.local_rank}"
        model = resolve_model(args.model, device)
        if args.precision is not None and hasattr(model, "precision"):
            model = copy.copy(model)  # shares the weights; the cached shipped model keeps its own setting
            model.precision = args.precision
        if args.workers > 1:  # ETKDG (run() launched the model's workers)
            model = EtkdgSampler(num_threads=args.workers)
        diffusion = model  # the diffusion model that --start and --polish wrap
        if args.sigma_start is not None and args.start == "prior":
            raise ValueError("--sigma-start needs --start etkdg or --start mixed")
        if args.prior_share is not None and args.start != "mixed":
            raise ValueError("--prior-share needs --start mixed")
        if args.start != "prior":
            if "init_conformers" not in inspect.signature(diffusion.sample).parameters:  # ETKDG, or another one
                raise ValueError(f"--start {args.start} needs a diffusion model, not {diffusion.name!r}")
            from molediff.chem.refine import DEFAULT_PRIOR_SHARE, DEFAULT_SIGMA_START, EtkdgRefinedSampler
            share = 0.0 if args.start == "etkdg" else \
                (args.prior_share if args.prior_share is not None else DEFAULT_PRIOR_SHARE)
            sigma_start = args.sigma_start if args.sigma_start is not None else DEFAULT_SIGMA_START
            starts = EtkdgSampler(num_threads=max(1, torch.get_num_threads()))  # same conformers, any thread count
            model = EtkdgRefinedSampler(diffusion, sigma_start, prior_share=share, etkdg=starts)
        if args.draws is not None:
            if "init_conformers" not in inspect.signature(diffusion.sample).parameters:
                raise ValueError(f"--draws needs a diffusion model, not {diffusion.name!r}")
            from molediff.chem.strain_ranking import StrainRankedSampler
            model = StrainRankedSampler(model, args.draws)
        if args.polish:
            if "init_conformers" not in inspect.signature(diffusion.sample).parameters:
                raise ValueError(f"--polish needs a diffusion model, not {diffusion.name!r}")
            from molediff.chem.polish import PolishedSampler
            model = PolishedSampler(diffusion, base=model)
    except (ValueError, MissingDependencyError, ImportError, OSError, CheckpointError) as err:
        _err(str(err))
        return 2

    target = dr.shard_path(args.output, ctx) if (args.output and ctx.distributed) else args.output
    if args.resume and args.output and ctx.distributed and os.path.exists(args.output) \
            and not any(os.path.exists(dr.shard_path(args.output, dr.DistContext(r, ctx.world_size)) + ".progress.json")
                        for r in range(ctx.world_size)):
        if ctx.is_main and not args.quiet:
            _err(f"{args.output} is already complete")
        return 0
    seed = args.seed
    if seed is None and args.resume and target:
        seed = _saved_seed(target + ".progress.json")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    dr.init(ctx)
    try:
        writer = (CheckpointedWriter(target, fmt, resume=args.resume, options=_options(args, seed),
                                     compressed=output_compressed(args.output))
                  if target else StreamWriter(sys.stdout, fmt))
    except ValueError as err:
        _err(str(err))
        return 2
    except OSError as err:  # a missing folder, no permission: before any molecule is processed
        _err(f"cannot write {target}: {err.strerror or err}")
        return 2

    total = count_records(args.input) if args.input else len(args.smiles)
    mine = (r for r in records if r.index % ctx.world_size == ctx.rank and not writer.done(r.index))
    results = generate_conformers_batch(
        mine, args.num_confs, seed, model=model, sampler=args.sampler, steps=args.steps, relax=args.relax,
        prune_rms=args.prune_rms, device=device, on_invalid=args.on_invalid,
        max_resample_rounds=args.max_resample_rounds, batch_size=args.batch_size, fragments=args.fragments,
        max_atoms=args.max_atoms, allow_radicals=args.allow_radicals, oversize=args.oversize,
        unsupported=args.unsupported)
    from tqdm import tqdm

    bar = tqdm(total=None if total is None else -(-total // ctx.world_size), unit="mol", dynamic_ncols=True,
               disable=True if (args.quiet or not ctx.is_main) else None, file=sys.stderr)
    t0, n_ok, n_fail, n_confs, n_warned = time.perf_counter(), 0, 0, 0, 0
    try:
        while True:
            chunk = list(itertools.islice(results, args.batch_size))
            if not chunk:
                break
            writer.commit(chunk)
            for res in chunk:
                n_ok += res.ok
                n_fail += not res.ok
                n_confs += res.mol.GetNumConformers() if res.ok else 0
                n_warned += bool(res.ok and res.warnings)
                if args.quiet:
                    continue
                if not res.ok and n_fail <= MAX_REPORTED:
                    bar.write(f"failed: {res.error}", file=sys.stderr)
                if res.ok and res.warnings and n_warned <= MAX_REPORTED:
                    bar.write(f"warning: {res.id}: {'; '.join(res.warnings)}", file=sys.stderr)
            bar.update(len(chunk))
    except (InputFileError, OSError) as err:  # the input breaks off midway (a truncated .gz)
        bar.close()
        hint = _saved_hint(args) if args.input == STDIN or not args.output else \
            "molecules written so far are kept, rerun with --resume once the file is fixed"
        _err(f"{args.input}: {err}; {hint}")
        return 1
    except KeyboardInterrupt:
        bar.close()
        _err(f"interrupted; {_saved_hint(args)}")
        return 130
    bar.close()

    if ctx.distributed:
        writer.close(keep_state=True)
        dr.barrier(ctx)
        if ctx.is_main:
            rows = dr.merge_shards(args.output, fmt, ctx.world_size, args.failures)
        dr.barrier(ctx)
        dr.shutdown(ctx)
        if not ctx.is_main:
            return 0  # rank 0 alone reports the job's status
    else:
        rows = writer.close(args.failures)
    n_fail_all = len(rows)
    if not args.quiet:
        dt = time.perf_counter() - t0
        _err(f"{n_ok} molecule(s) -> {n_confs} conformer(s), {n_fail} failed, in {dt:.1f} s "
             f"({n_ok / max(dt, 1e-9):.1f} mol/s){' (this rank)' if ctx.distributed else ''}")
        if n_warned:
            _err(f"{n_warned} written molecule(s) came with warnings"
                 f"{f' (the first {MAX_REPORTED} are above)' if n_warned > MAX_REPORTED else ''}; "
                 "each of their records keeps them in molediff_warnings")
        if n_fail_all and not args.failures:
            _err(f"{n_fail_all} input(s) failed; use --failures report.csv for the list")
    return 0 if (args.keep_going or n_fail_all == 0) else 1
