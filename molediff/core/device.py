"""Checking that a requested torch device can be used on this machine, before any work starts."""

from __future__ import annotations

import torch

__all__ = ["DeviceUnavailableError", "require_device"]


class DeviceUnavailableError(ValueError):
    """A torch device was requested that this machine or this torch build cannot use."""


def require_device(device: str | torch.device | None) -> torch.device:
    """The ``torch.device`` named by ``device`` (``None``: CPU), checked to be usable here.

    Parameters
    ----------
    device : str, torch.device or None
        E.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Raises
    ------
    DeviceUnavailableError
        The name is not a device, or torch cannot allocate on it (no GPU, a CPU-only build, an index past
        the last GPU); the message names the device and torch's reason.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceUnavailableError(f"{str(device)!r} is not a torch device: {err}") from None
    if dev.type == "cpu":
        return dev
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as err:  # torch raises AssertionError for a CPU-only build
        raise DeviceUnavailableError(f"device {str(device)!r} is not usable here (torch {torch.__version__}): "
                                     f"{_first_sentence(err)}") from None
    return dev


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].split(". ")[0][:200]
