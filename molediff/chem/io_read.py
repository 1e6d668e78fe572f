"""Lazy readers for conformer-generation inputs: .smi, .csv / .tsv, .sdf (optionally gzipped), or
SMILES lines on standard input (the path ``-``).

Every reader yields :class:`InputRecord` objects one at a time (memory stays bounded on
files of millions of lines) and never raises for a bad record: a record that cannot be
read carries its :class:`~molediff.chem.errors.MolediffInputError` in ``error`` so the batch
reports it with its line number and goes on.

ID of each record: the name column of a .smi line, the ID column of a .csv, the title of an
SDF block; when missing, ``"line <n>"`` of the record in the input.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator, TextIO

from rdkit import Chem, rdBase

from molediff.chem.errors import EmptyInputError, InputFileError, InvalidMoleculeError, MolediffInputError

__all__ = ["InputRecord", "read_inputs", "read_smi", "read_csv", "read_sdf", "records_from_strings",
           "input_format", "count_records", "STDIN"]

STDIN = "-"  # the input path that reads SMILES lines (``SMILES [name]``, as in a .smi file) from standard input

_CSV_FIELD_LIMIT = 1 << 26  # characters in one CSV field: a molfile column fits, an unclosed quote stops
_ID_COLUMNS = ("id", "name", "title", "mol_id", "molecule_id", "compound_id", "identifier")


@dataclass
class InputRecord:
    """One input molecule, or the reason it could not be read.

    Attributes
    ----------
    index : int
        0-based position among the records of the input (comments and headers excluded).
    line : int or None
        1-based line of the record in the file (start line for SDF blocks).
    id : str
        Identifier used as output title and in failure reports.
    source : str, Chem.Mol or None
        The SMILES or the molecule; ``None`` when ``error`` is set.
    smiles : str
        The SMILES as given (or ``""`` for molecules read from SDF).
    error : MolediffInputError or None
        Why the record could not be read.
    """

    index: int
    line: int | None
    id: str
    source: "str | Chem.Mol | None"
    smiles: str = ""
    error: MolediffInputError | None = None

    @property
    def label(self) -> str:
        """Human-readable identity for messages, e.g. ``"line 3 (aspirin)"``."""
        where = f"line {self.line}" if self.line is not None else f"record {self.index + 1}"
        return where if self.id in ("", where) else f"{where} ({self.id})"


def input_format(path: str | os.PathLike) -> str:
    """Format of an input path from its extension: ``"smi"``, ``"csv"``, ``"tsv"`` or ``"sdf"``
    (``"smi"`` for :data:`STDIN`)."""
    if os.fspath(path) == STDIN:
        return "smi"
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".smi", "smi"), (".smiles", "smi"), (".txt", "smi"), (".csv", "csv"),
                     (".tsv", "tsv"), (".sdf", "sdf"), (".sd", "sdf"), (".mol", "sdf")):
        if name.endswith(ext):
            return fmt
    raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its extension "
                     "(expected .smi, .csv, .tsv or .sdf, optionally .gz)")


def _stdin_lines() -> Iterator[str]:
    """Lines of standard input, decoded as UTF-8 (undecodable bytes replaced); stdin is left open."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (an embedding application, a test)
        yield from sys.stdin
        return
    for raw in buffer:
        yield raw.decode("utf-8", errors="replace")


def _open_text(path: str | os.PathLike) -> TextIO:
    # utf-8-sig drops a byte-order mark before any parser sees it (a BOM before a quoted CSV header hid the column)
    if os.fspath(path).lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def read_inputs(path: str | os.PathLike, *, smiles_column: str | None = None,
                id_column: str | None = None) -> Iterator[InputRecord]:
    """Read records lazily from ``path``; the format comes from the extension (:data:`STDIN`: SMILES lines).

    Raises
    ------
    EmptyInputError
        The file has no records (raised when iteration finds nothing).
    ValueError
        Unknown extension; :class:`~molediff.chem.errors.InputFileError` (a ``ValueError``) for a CSV
        without the named or any SMILES column or without the named ID column.
    """
    fmt = input_format(path)
    n = 0
    if os.fspath(path) == STDIN:
        for rec in read_smi(_stdin_lines()):
            n += 1
            yield rec
        if n == 0:
            raise EmptyInputError("standard input (-i -) contains no molecules")
        return
    with _open_text(path) as handle:
        if fmt == "smi":
            it = read_smi(handle)
        elif fmt in ("csv", "tsv"):
            it = read_csv(handle, smiles_column=smiles_column, id_column=id_column,
                          delimiter="\t" if fmt == "tsv" else ",")
        else:
            it = read_sdf(handle)
        try:
            for rec in it:
                n += 1
                yield rec
        except (EOFError, zlib.error) as err:  # a truncated or corrupt .gz
            raise InputFileError(f"truncated or corrupt after {n} record(s): {err}") from None
    if n == 0:
        raise EmptyInputError(f"input file {os.fspath(path)!r} contains no molecules")


def _blank_error(line: int) -> EmptyInputError:
    return EmptyInputError("empty line", item=f"line {line}")


def read_smi(lines: Iterable[str]) -> Iterator[InputRecord]:
    """SMILES file: ``SMILES [name ...]`` per line; ``#`` comments and a ``SMILES`` header skipped.

    A CXSMILES extension after the SMILES (``C[C@H](O)CC |&1:1| name``) is kept with the SMILES.

    Blank lines are records with an :class:`EmptyInputError` so that they show up in the
    failure report instead of vanishing silently.
    """
    index = 0
    for lineno, raw in enumerate(lines, start=1):
        text = raw.strip().lstrip("\ufeff")
        if text.startswith("#"):
            continue
        parts = text.split(None, 1)
        if lineno == 1 and parts and parts[0].lower() == "smiles":
            continue
        if not parts:
            yield InputRecord(index, lineno, f"line {lineno}", None, "", _blank_error(lineno))
        else:
            smiles, name = parts[0], parts[1].strip() if len(parts) > 1 else ""
            end = name.find("|", 1) if name.startswith("|") else -1
            if end > 0:  # a CXSMILES extension (enhanced stereo, labels) belongs to the SMILES, not the name
                smiles, name = f"{smiles} {name[:end + 1]}", name[end + 1:].strip()
            yield InputRecord(index, lineno, name or f"line {lineno}", smiles, smiles)
        index += 1


def read_csv(handle: TextIO, *, smiles_column: str | None = None, id_column: str | None = None,
             delimiter: str = ",") -> Iterator[InputRecord]:
    """CSV / TSV with a header; SMILES and ID columns found case-insensitively unless named."""
    reader = csv.reader(handle, delimiter=delimiter)
    header = _next_row(reader, 1)
    if header is None:
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    lower = [h.lower() for h in header]
    s_col = _find_column(lower, smiles_column, exact=("smiles", "smi"), contains="smiles")
    if s_col is None and smiles_column is not None:
        raise InputFileError(f"SMILES column {smiles_column!r} not found among {header}")
    if s_col is None:
        raise InputFileError(f"no SMILES column among {header}; name it with --smiles-column")
    i_col = _find_column(lower, id_column, exact=_ID_COLUMNS, contains=None)
    if id_column is not None and i_col is None:
        raise InputFileError(f"ID column {id_column!r} not found among {header}")
    index = 0
    line = reader.line_num
    while (row := _next_row(reader, line + 1)) is not None:
        start, line = line + 1, reader.line_num
        smi = row[s_col].strip() if s_col < len(row) else ""
        ident = row[i_col].strip() if i_col is not None and i_col < len(row) else ""
        ident = ident or f"line {start}"
        if not smi:
            err = EmptyInputError("empty SMILES field" if any(c.strip() for c in row) else "empty line",
                                  item=f"line {start}")
            yield InputRecord(index, start, ident, None, "", err)
        else:
            yield InputRecord(index, start, ident, smi, smi)
        index += 1


def _next_row(reader, start: int) -> list[str] | None:
    """The next row, fields up to :data:`_CSV_FIELD_LIMIT` long (the csv module's own limit, 131,072, stopped
    files with long text columns with a traceback); the process-wide limit is restored after."""
    old = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        return next(reader, None)
    except csv.Error as err:
        if "field limit" in str(err):
            raise InputFileError(f"line {start}: a field longer than {_CSV_FIELD_LIMIT} characters "
                                 "(an unclosed quote?)") from None
        raise InputFileError(f"line {start}: {err}") from None
    finally:
        csv.field_size_limit(old)


def _find_column(lower: list[str], wanted: str | None, exact, contains) -> int | None:
    if wanted is not None:
        return lower.index(wanted.lower()) if wanted.lower() in lower else None
    for name in exact:
        if name in lower:
            return lower.index(name)
    if contains:
        for k, name in enumerate(lower):
            if contains in name:
                return k
    return None


def read_sdf(lines: Iterable[str]) -> Iterator[InputRecord]:
    """SD file split on ``$$$$`` lines; each block parsed with hydrogens, stereo and data fields kept.

    A block RDKit cannot read becomes a record with :class:`InvalidMoleculeError`; a
    trailing block without ``$$$$`` is still read.
    """
    index, block, start = 0, [], None
    for lineno, raw in enumerate(lines, start=1):
        if start is None:
            start = lineno
        if raw.rstrip() == "$$$$":  # "$$$$ " too: it merged every later record into this one, silently
            yield _sdf_record(index, start, block)
            index, block, start = index + 1, [], None
        else:
            block.append(raw)
    if any(line.strip() for line in block):
        yield _sdf_record(index, start, block)


def _sdf_record(index: int, start: int, block: list[str]) -> InputRecord:
    title = block[0].strip() if block else ""
    ident = title or f"line {start}"
    text = "".join(line if line.endswith("\n") else line + "\n" for line in block)
    if not text.strip():
        return InputRecord(index, start, ident, None, "", EmptyInputError("empty SDF record"))
    with rdBase.BlockLogs():
        try:  # a supplier, not MolFromMolBlock, which drops the block's data fields (the output carries them)
            supplier = Chem.SDMolSupplier()
            supplier.SetData(text, sanitize=True, removeHs=False, strictParsing=False)
            mol = next(iter(supplier), None)
        except Exception:  # some malformed blocks raise instead of returning None
            mol = None
    if mol is None:
        return InputRecord(index, start, ident, None, "",
                           InvalidMoleculeError("unreadable SDF block (malformed or invalid valence)"))
    if mol.GetNumAtoms() == 0:
        return InputRecord(index, start, ident, None, "", EmptyInputError("SDF record has no atoms"))
    return InputRecord(index, start, ident, mol, "")


def records_from_strings(items: Iterable["str | Chem.Mol"]) -> Iterator[InputRecord]:
    """Wrap SMILES strings or molecules given in memory (IDs: ``_Name`` or ``"input <k>"``)."""
    for k, item in enumerate(items):
        if isinstance(item, InputRecord):
            yield item
            continue
        ident = f"input {k + 1}"
        if isinstance(item, Chem.Mol) and item.HasProp("_Name") and item.GetProp("_Name").strip():
            ident = item.GetProp("_Name").strip()
        yield InputRecord(k, None, ident, item, item if isinstance(item, str) else "")


def count_records(path: str | os.PathLike) -> int | None:
    """Cheap upper bound of the number of records (for a progress bar); ``None`` if unknown (stdin)."""
    if os.fspath(path) == STDIN:
        return None
    try:
        fmt = input_format(path)
        with _open_text(path) as handle:
            if fmt == "sdf":
                return sum(1 for line in handle if line.startswith("$$$$"))
            return max(sum(1 for _ in handle) - (1 if fmt in ("csv", "tsv") else 0), 0)
    except (OSError, ValueError, EOFError, zlib.error):
        return None
