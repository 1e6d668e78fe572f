"""Load a conformer model from anything a run produces: an export, a trainer checkpoint, a run folder.

:func:`molediff.chem.model.load_conformer_model` reads the shipping format (``model.json`` +
``model.safetensors``, EMA weights only), which a run writes when training stops. While a run is
still going, only trainer checkpoints exist (``checkpoints/step_<N>.{json,safetensors}``, see
:mod:`molediff.training.checkpoint`); they hold the raw weights under ``model.*`` and the EMA
parameters under ``ema.*``. :func:`load_model_for_evaluation` accepts all three and, for a
checkpoint, builds the model from the sidecar's ``config.model`` section with the EMA weights
(buffers, if any, come from the raw ``model.*`` tensors, as the trainer's export does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from molediff.chem.model import ConformerModel, ConformerModelConfig, load_conformer_model
from molediff.file_pair import file_pair
from molediff.training.checkpoint import CheckpointError, load_checkpoint

__all__ = ["LoadedModel", "is_trainer_checkpoint", "latest_checkpoint", "load_checkpoint_model",
           "load_model_for_evaluation"]

_STEP = re.compile(r"^step_(\d+)\.json$")


@dataclass
class LoadedModel:
    """A conformer model and where it came from.

    Attributes
    ----------
    model : ConformerModel
        In eval mode.
    source : Path
        The JSON file the weights were described by.
    kind : str
        ``"export"`` (shipping format) or ``"checkpoint"`` (trainer checkpoint, EMA weights).
    step : int or None
        Training step of the weights, when recorded.
    """

    model: ConformerModel
    source: Path
    kind: str
    step: int | None


def is_trainer_checkpoint(path: str | Path) -> bool:
    """True when ``path`` (a ``.json``/``.safetensors`` file or their stem) is a trainer checkpoint."""
    sidecar, _ = file_pair(path)
    if not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "tensors_sha256" in meta and "optimizer" in meta


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Sidecar of the newest ``step_<N>`` checkpoint in ``run_dir/checkpoints`` (or ``run_dir``)."""
    run_dir = Path(run_dir)
    for folder in (run_dir / "checkpoints", run_dir):
        if folder.is_dir():
            found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name))]
            if found:
                return max(found)[1]
    return None


def load_checkpoint_model(path: str | Path, device: str | torch.device | None = None, *,
                          use_ema: bool = True) -> LoadedModel:
    """Build a :class:`ConformerModel` from a trainer checkpoint.

    Parameters
    ----------
    path : str or Path
        ``step_<N>.json``, ``step_<N>.safetensors`` or their stem.
    device : str or torch.device, optional
        Where to put the weights (default CPU).
    use_ema : bool
        Load the EMA parameters (what the trainer exports); ``False`` loads the raw weights.

    Raises
    ------
    CheckpointError
        The checkpoint is unreadable, has no ``config.model`` section, lacks EMA tensors when
        ``use_ema`` is set, or its tensors do not fit the configured network.
    """
    ck = load_checkpoint(path)
    model_cfg = ck.meta.get("config", {}).get("model")
    if model_cfg is None or ck.meta.get("config", {}).get("task", "conformer") != "conformer":
        raise CheckpointError(f"{ck.path} is not a conformer-model checkpoint (no config.model section)")
    state = ck.section("model")
    if use_ema:
        ema = ck.section("ema")
        if not ema:
            raise CheckpointError(f"{ck.path} holds no EMA weights; pass use_ema=False for the raw ones")
        state.update(ema)
    model = ConformerModel(ConformerModelConfig.from_dict(model_cfg))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {ck.path} do not fit the configured network: {exc}") from exc
    step = ck.meta.get("step")
    model.card = {"step": step, "source": str(ck.path), "weights": "ema" if use_ema else "raw"}  # type: ignore[attr-defined]
    return LoadedModel(model.to(device or "cpu").eval(), ck.path, "checkpoint",
                       None if step is None else int(step))


def load_model_for_evaluation(path: str | Path | None, device: str | torch.device | None = None) -> LoadedModel:
    """Load an exported model, a trainer checkpoint, or a run folder.

    A run folder with ``model.json`` loads the export; without it (training still running), its
    newest checkpoint. ``None`` or a shipped name loads through :func:`load_conformer_model`.

    Raises
    ------
    FileNotFoundError
        Nothing loadable at ``path``.
    CheckpointError
        A checkpoint that cannot be turned into a conformer model.
    """
    if path is not None:
        p = Path(path)
        if p.is_dir() and not (p / "model.json").is_file():
            latest = latest_checkpoint(p)
            if latest is None:
                raise FileNotFoundError(f"{p} holds neither model.json nor checkpoints/step_*.json")
            return load_checkpoint_model(latest, device)
        if not p.is_dir() and is_trainer_checkpoint(p):
            return load_checkpoint_model(p, device)
    model = load_conformer_model(path, device=device)
    card = getattr(model, "card", {}) or {}
    source = Path(path) if path is not None else Path("<shipped default>")
    step = card.get("step")
    sidecar = source / "model.json" if source.is_dir() else file_pair(source)[0]
    if step is None and sidecar.is_file():
        step = json.loads(sidecar.read_text()).get("step")
    return LoadedModel(model, source, "export", None if step is None else int(step))
