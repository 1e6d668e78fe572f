"""The ``molediff`` command line: a thin dispatcher over sub-command modules.

Each sub-command lives next to the code it drives and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their sub-command is used, so a missing optional dependency breaks only that command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "conformers": ("molediff.chem.cli_conformers", "generate 3D conformers from SMILES / SDF"),
    "train": ("molediff.training.cli", "train a model from a YAML config"),
    "evaluate": ("molediff.chem.cli_evaluate", "evaluate a conformer model on QM9 against ETKDG"),
    "sample-points": ("molediff.pointcloud.cli", "sample point clouds from a trained model"),
    "view": ("molediff.chem.cli_view", "draw a grid of conformers from an SDF file as a PNG"),
}


def build_parser() -> argparse.ArgumentParser:
    from molediff import __version__

    parser = argparse.ArgumentParser(
        prog="molediff",
        description="SE(3)-equivariant diffusion for molecules and point clouds: 3D conformers from SMILES with "
        "the shipped QM9 model, training, evaluation against ETKDG, point-cloud sampling.",
        epilog="Run 'molediff COMMAND --help' for a command's options. Example: "
        "molediff conformers \"CC(=O)Nc1ccc(O)cc1\" -n 10 --seed 0 -o paracetamol.sdf",
    )
    parser.add_argument("--version", action="version", version=f"molediff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molediff`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # handles --help / --version / unknown command errors
        parser.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"molediff {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    args.raw_argv = list(rest)  # the sub-command's own arguments, for commands that re-launch themselves
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
