"""``python -m molediff`` is the ``molediff`` command (also under ``torchrun -m molediff``)."""

from molediff.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
