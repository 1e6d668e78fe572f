"""Crash-safe output of conformers (.sdf, .xyz / extended XYZ) and failure reports.

Design (a tiny write-ahead log):

* Results are written a chunk at a time: the chunk's records are appended to the output
  in one write, flushed and ``fsync``-ed; the failures of the chunk go the same way into a
  JSON-lines journal ``<output>.failures.jsonl``.
* Then a small state file ``<output>.progress.json`` is replaced atomically (temp file,
  ``fsync``, ``os.replace``): it holds the committed byte size of output and journal, the next
  input index to process and the run's options.
* After a crash (even ``kill -9`` or power loss after a commit) everything up to the last
  commit is intact. ``resume=True`` truncates the output and the journal to their committed
  size (dropping a half-written chunk), skips the committed input records and appends, so
  nothing is duplicated or lost. Resuming with different options is refused.
* On success the failure report (.csv or .json) is written atomically and the state and
  journal are removed. Resuming an output without state (a finished run) skips every input
  index already present in it.
* A ``.gz`` output gets one gzip member per chunk (a multi-member file, which gzip, zcat and
  Python read as one stream). The committed byte size is then the end of the last complete
  member, so truncating to it works as for plain text; without state, the complete members are
  found by decompressing them one by one and a truncated trailing member is dropped.

Every written record carries ``molediff_input_index``; distributed shards are merged on it.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import io
import json
import os
import re
import zlib
from typing import Iterable, Iterator, TextIO

import numpy as np
from rdkit import Chem

__all__ = ["output_format", "output_compressed", "format_result", "atomic_write_text", "CheckpointedWriter",
           "StreamWriter", "failure_row", "write_failure_report", "iter_records", "merge_outputs", "FAILURE_FIELDS"]

FAILURE_FIELDS = ("input_index", "input_line", "id", "smiles", "error", "reason")
_INDEX_SDF = re.compile(r"^>\s*<molediff_input_index>.*\n(\d+)", re.M)
_INDEX_XYZ = re.compile(r"molediff_input_index=(\d+)")


_GZIP_MEMBER_LEVEL = 6  # zlib's default: about as small as 9 on SDF text, several times faster


def output_format(path: str | os.PathLike) -> str:
    """``"sdf"`` or ``"xyz"`` (extended XYZ) from the extension of ``path`` (a ``.gz`` after it is allowed)."""
    name = os.fspath(path).lower()
    if output_compressed(name):
        name = name[:-3]
    if name.endswith((".sdf", ".sd", ".mol")):
        return "sdf"
    if name.endswith((".xyz", ".extxyz")):
        return "xyz"
    for ext in (".bz2", ".xz", ".zst", ".zip", ".lz4"):
        if name.endswith(ext):
            raise ValueError(f"cannot write {os.fspath(path)!r}: {ext} compression is not supported; "
                             "use .sdf.gz or .xyz.gz, or write .sdf and compress it afterwards")
    raise ValueError(f"cannot tell the output format of {os.fspath(path)!r} (expected .sdf or .xyz, "
                     "optionally .gz)")


def output_compressed(path: str | os.PathLike) -> bool:
    """True when ``path`` names a gzip output (``.gz``)."""
    return os.fspath(path).lower().endswith(".gz")


def _clean(value) -> str:
    """One line: a record's title."""
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def _clean_value(value: str) -> str:
    """An SDF data value as is, less blank lines (a blank line ends the value) and trailing spaces."""
    return "\n".join(line.rstrip() for line in str(value).splitlines() if line.strip())


def format_result(result, fmt: str = "sdf") -> str:
    """Text of all conformers of an ok :class:`~molediff.chem.generate.ConformerResult`.

    One record per conformer, titled with the input ID, carrying the molecule's and the
    conformer's ``molediff_*`` properties plus input index / line and conformer number.

    Raises
    ------
    RuntimeError
        A conformer has non-finite coordinates (never written).
    """
    mol = result.mol
    confs = list(mol.GetConformers())
    buf = io.StringIO()
    atoms_list = []
    for k, conf in enumerate(confs):
        if not np.all(np.isfinite(conf.GetPositions())):
            raise RuntimeError(f"refusing to write non-finite coordinates for {result.id!r}")
        rec = Chem.Mol(mol, False, conf.GetId())
        extra = dict(conf.GetPropsAsDict(includePrivate=False))
        extra.update(molediff_input_index=result.index, molediff_conf_index=k, molediff_num_confs=len(confs))
        if result.line is not None:
            extra["molediff_input_line"] = result.line
        for key, val in extra.items():
            rec.SetProp(key, str(val))
        for key in rec.GetPropNames():
            rec.SetProp(key, _clean_value(rec.GetProp(key)))
        rec.SetProp("_Name", _clean(result.id))
        if fmt == "sdf":
            writer = Chem.SDWriter(buf)
            writer.write(rec)
            writer.close()
        else:
            from molediff.chem.convert import to_ase_atoms
            atoms_list.append(to_ase_atoms(rec, rec.GetConformer().GetId()))
    if fmt == "xyz" and atoms_list:
        import ase.io
        ase.io.write(buf, atoms_list, format="extxyz")
    return buf.getvalue()


def failure_row(result) -> dict:
    """One failure-report row for a failed result."""
    err = result.error
    return {"input_index": result.index, "input_line": "" if result.line is None else result.line,
            "id": result.id, "smiles": result.smiles, "error": type(err).__name__,
            "reason": getattr(err, "reason", str(err))}


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_failure_report(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write failure rows as CSV (default) or JSON (``.json``), atomically."""
    rows = list(rows)
    if os.fspath(path).lower().endswith(".json"):
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FAILURE_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def iter_records(path: str | os.PathLike, fmt: str, compressed: bool | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(input_index, text)`` for each complete record of an output file, in file order.

    ``compressed`` (default: a ``.gz`` path) reads a multi-member gzip file up to its last complete member.
    """
    if compressed is None:
        compressed = output_compressed(path)
    if compressed:
        for _, records in _gzip_chunks(path, fmt):
            yield from records
        return
    with open(path, encoding="utf-8", newline="") as f:
        yield from _records(f, fmt)


def _records(f: TextIO, fmt: str) -> Iterator[tuple[int, str]]:
    """The complete records of an open text stream (see :func:`iter_records`)."""
    if fmt == "sdf":
        block: list[str] = []
        for line in f:
            block.append(line)
            if line.rstrip("\r\n") == "$$$$":
                text = "".join(block)
                block = []
                m = _INDEX_SDF.search(text)
                yield (int(m.group(1)) if m else -1), text
    else:
        while True:
            head = f.readline()
            if not head.strip():
                return
            lines = [head, f.readline()] + [f.readline() for _ in range(int(head))]
            if not lines[-1].endswith("\n"):
                return  # incomplete trailing record
            m = _INDEX_XYZ.search(lines[1])
            yield (int(m.group(1)) if m else -1), "".join(lines)


def _gzip_members(path: str | os.PathLike, read_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield ``(end_offset, data)`` for each complete gzip member of ``path``: its end in the compressed
    file and its decompressed bytes. Stops at a truncated or corrupt member (a crash while appending it).

    The standard library reads multi-member files as one stream but does not tell where members end,
    which a resume needs in order to truncate to the last complete one; zlib's ``unused_data`` does.
    """
    offset, pending = 0, b""
    with open(path, "rb") as f:
        while True:
            d, parts, fed = zlib.decompressobj(31), [], 0  # 31: gzip header and trailer
            while not d.eof:
                chunk = pending or f.read(read_size)
                pending = b""
                if not chunk:
                    return  # the end of the file, cleanly between members or inside a truncated one
                try:
                    parts.append(d.decompress(chunk))
                except zlib.error:
                    return  # garbage after the last complete member
                fed += len(chunk)
            pending = d.unused_data
            offset += fed - len(pending)
            yield offset, b"".join(parts)


def _gzip_chunks(path: str | os.PathLike, fmt: str) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """``(end_offset, records)`` per complete gzip member that holds only complete records."""
    for end, data in _gzip_members(path):
        text = data.decode("utf-8", errors="replace")
        records = list(_records(io.StringIO(text, newline=""), fmt))
        if sum(len(t) for _, t in records) != len(text):
            return  # a member that ends inside a record: not one this module wrote
        yield end, records


def _encoded(text: str, compressed: bool) -> bytes:
    """``text`` as written to an output: UTF-8, or one gzip member of it."""
    data = text.encode("utf-8")
    return gzip.compress(data, compresslevel=_GZIP_MEMBER_LEVEL, mtime=0) if compressed else data


def merge_outputs(shards: list[str], out_path: str, fmt: str, compressed: bool = False) -> None:
    """Merge per-rank outputs (each sorted by input index) into ``out_path`` in input order, atomically.

    ``compressed``: the shards and the output are gzip files (the output in members of about 1 MiB of text).
    """
    tmp = f"{out_path}.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        streams = [iter_records(p, fmt, compressed) for p in shards if os.path.exists(p)]
        buf: list[str] = []
        size = 0
        for _, text in heapq.merge(*streams, key=lambda rec: rec[0]):
            buf.append(text)
            size += len(text)
            if size >= 1 << 20:
                out.write(_encoded("".join(buf), compressed))
                buf, size = [], 0
        if buf:
            out.write(_encoded("".join(buf), compressed))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, out_path)
    _fsync_dir(out_path)


class StreamWriter:
    """Write results to a text stream (e.g. stdout) as they come; no resume, no state."""

    def __init__(self, stream: TextIO, fmt: str = "sdf") -> None:
        self.stream, self.fmt = stream, fmt
        self.failures: list[dict] = []
        self.next_index = 0

    def done(self, index: int) -> bool:
        return False

    def commit(self, results) -> None:
        for res in results:
            if res.ok:
                self.stream.write(format_result(res, self.fmt))
            else:
                self.failures.append(failure_row(res))
        self.stream.flush()

    def close(self, failures_path: str | None = None) -> list[dict]:
        if failures_path:
            write_failure_report(failures_path, self.failures)
        return self.failures


class CheckpointedWriter:
    """Append results chunk by chunk with fsync and an atomic progress file (see module docstring).

    Parameters
    ----------
    path : str
        Output file.
    fmt : {"sdf", "xyz"}
        Output format.
    resume : bool
        Continue an interrupted run instead of starting over.
    options : dict
        JSON-able run options; a resume with different options raises ``ValueError``.
    compressed : bool, optional
        Write one gzip member per chunk (default: when ``path`` ends in ``.gz``).
    """

    def __init__(self, path: str, fmt: str, *, resume: bool = False, options: dict | None = None,
                 compressed: bool | None = None) -> None:
        self.path, self.fmt = os.fspath(path), fmt
        self.compressed = output_compressed(self.path) if compressed is None else compressed
        self.state_path = self.path + ".progress.json"
        self.journal_path = self.path + ".failures.jsonl"
        self.options = json.loads(json.dumps(options or {}))
        self.next_index = 0
        self._present: set[int] | None = None
        self.num_failures_before = 0
        state = self._read_state()
        if resume and state is not None:
            if state.get("options") != self.options:
                diff = {k for k in set(state.get("options", {})) | set(self.options)
                        if state.get("options", {}).get(k) != self.options.get(k)}
                raise ValueError(f"cannot resume {self.path}: it was started with different options "
                                 f"({', '.join(sorted(diff))}); start a new output instead")
            self._truncate(self.path, state["output_bytes"])
            self._truncate(self.journal_path, state["journal_bytes"])
            self.next_index = state["next_index"]
        elif resume and os.path.exists(self.path):
            self._present, end = set(), 0
            if self.compressed:
                for end, records in _gzip_chunks(self.path, fmt):
                    self._present.update(idx for idx, _ in records)
            else:
                for idx, text in iter_records(self.path, fmt, compressed=False):
                    self._present.add(idx)
                    end += len(text.encode("utf-8"))
            self._truncate(self.path, end)
            self._truncate(self.journal_path, 0)
        else:
            self._truncate(self.path, 0)
            self._truncate(self.journal_path, 0)
        self._save_state()

    def _read_state(self) -> dict | None:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @staticmethod
    def _truncate(path: str, size: int) -> None:
        with open(path, "a+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def _save_state(self) -> None:
        state = {"version": 1, "output_bytes": os.path.getsize(self.path),
                 "journal_bytes": os.path.getsize(self.journal_path), "next_index": self.next_index,
                 "options": self.options}
        atomic_write_text(self.state_path, json.dumps(state))

    def done(self, index: int) -> bool:
        """True when input record ``index`` is already committed (skip it on resume)."""
        if self._present is not None:
            return index in self._present
        return index < self.next_index

    def commit(self, results) -> None:
        """Durably append the chunk's conformers and failures, then advance the progress file."""
        if not results:
            return
        text = "".join(format_result(r, self.fmt) for r in results if r.ok)
        fails = "".join(json.dumps(failure_row(r)) + "\n" for r in results if not r.ok)
        for path, payload in ((self.path, text), (self.journal_path, fails)):
            if payload:
                with open(path, "ab") as f:
                    f.write(_encoded(payload, self.compressed and path == self.path))
                    f.flush()
                    os.fsync(f.fileno())
        self.next_index = max(self.next_index, max(r.index for r in results) + 1)
        self._save_state()

    def failures(self) -> list[dict]:
        """Failure rows committed so far (this run and the resumed part)."""
        with open(self.journal_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self, failures_path: str | None = None, *, keep_state: bool = False) -> list[dict]:
        """Finish: write the failure report (if asked) and remove state and journal.

        ``keep_state=True`` leaves them for a distributed merge.
        """
        rows = self.failures()
        if failures_path:
            write_failure_report(failures_path, rows)
        if not keep_state:
            self.discard_state()
        return rows

    def discard_state(self) -> None:
        for p in (self.state_path, self.journal_path):
            if os.path.exists(p):
                os.remove(p)
