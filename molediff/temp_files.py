"""Temporary files for atomic writes: created next to their target, with the caller's umask.

Every file molediff writes atomically (checkpoints, exported models, data caches, point clouds, figures)
is written to a temporary file in the target's folder and renamed over the target. ``tempfile.mkstemp``
would create that file with mode ``0600`` whatever the umask, so exported models and shared caches would
end up readable by their owner only; :func:`reserve_temp_path` creates it as ``open()`` would (``0666``
less the umask) under a unique name. Writers that replace the file themselves (``safetensors``' ``save_file``
writes ``0600`` files too) are followed by :func:`set_default_mode`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["reserve_temp_path", "set_default_mode"]


def reserve_temp_path(target: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Create an empty, uniquely named file next to ``target`` and return its path.

    Parameters
    ----------
    target
        The file the caller will replace (its folder must exist).
    suffix
        Ending of the temporary name (e.g. ``".png"`` where a writer infers the format from it).

    Returns
    -------
    Path
        ``<folder>/.<target name>.<16 hex digits><suffix>``, created with mode ``0666`` less the umask;
        the caller writes it, then ``os.replace`` s it over ``target`` or unlinks it.
    """
    target = Path(target)
    for _ in range(100):
        path = target.parent / f".{target.name}.{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary name next to {target}")  # pragma: no cover


def set_default_mode(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode ``open()`` would give a new file: ``0666`` less the process umask."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux reports it without changing it
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask
