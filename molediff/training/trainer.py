"""The generic training loop: AdamW, warmup / cosine LR, clipping, EMA, bf16, DDP, exact resume.

Everything model-specific lives in a :class:`~molediff.training.task.Task`; the trainer owns
the optimiser, the EMA, the RNGs, the data order, the run folder and its checkpoints::

    run_dir/
      config.yaml                       the resolved config
      log.jsonl                         training and validation rows
      checkpoints/step_<N>.{safetensors,json}, best.{safetensors,json}
      model.safetensors, model.json     EMA weights for shipping (written when a run stops)

Non-finite values: a NaN / inf loss stops training at once (:class:`NonFiniteLossError`). A finite
loss whose gradients are NaN / inf (e.g. from coincident atoms) skips that step's optimiser and EMA
updates (logged as a ``"skip"`` row and counted); ``optimiser.max_skipped_steps`` such steps in a row
are allowed, the next stops training (:class:`NonFiniteGradientError`). A checkpoint or export whose
parameters, EMA or optimiser moments hold NaN / inf is never written
(:class:`~molediff.training.checkpoint.NonFiniteTensorError`).

Exact resume: the trainer records the data generator's state at the start of each epoch and
how many batches of the epoch were consumed; on resume it rebuilds the loader, replays the
epoch up to that point, and restores every RNG, so training N steps straight and N/2 + N/2
with a restart in between give bitwise-identical weights on CPU. A resume under another world size
(or batch size) cannot replay the epoch: it starts a new one, its data order drawn from the saved data
generator (the same on every rank); under another world size the per-rank noise generators and the
global RNGs are reseeded from (seed, rank, step). Such a resume is reproducible, not bitwise that of an
uninterrupted run, and never repeats the streams of the run's first steps.
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch import nn

from molediff.nn.precision import edge_precision, supports_reduced_precision
from molediff.training import distributed as D
from molediff.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    NonFiniteTensorError,
    flatten_optimizer_state,
    load_checkpoint,
    non_finite_keys,
    unflatten_optimizer_state,
)
from molediff.training.config import Config
from molediff.training.ema import EMA
from molediff.training.export import export_model
from molediff.training.logging import RunLog
from molediff.training.registry import build_task
from molediff.training.rng import capture_rng_state, restore_rng_state, seed_everything
from molediff.training.task import Task, check_task, move_to_device

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "NonFiniteGradientError", "NonFiniteTensorError",
           "RunDirError", "Task", "lr_at"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; nothing is written for that step."""


class NonFiniteGradientError(FloatingPointError):
    """More than ``optimiser.max_skipped_steps`` steps in a row had a NaN or infinite gradient norm."""


class RunDirError(RuntimeError):
    """The run folder already holds checkpoints and ``resume`` was not requested."""


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended: ``reason`` is completed, max_steps, max_minutes or signal."""

    step: int
    epoch: int
    reason: str
    checkpoint: Path | None = None
    export: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup, then constant or cosine.

    With ``optimiser.restart_step`` > 0 the schedule starts again at that step (warm-up, then the cosine
    to ``training.steps``); steps before it follow the original schedule.
    """
    o, total = cfg.optimiser, cfg.training.steps
    start = o.restart_step if 0 < o.restart_step <= step else 0
    if o.warmup_steps and step - start < o.warmup_steps:
        return o.lr * (step - start + 1) / o.warmup_steps
    if o.lr_schedule == "cosine":
        first = start + o.warmup_steps
        progress = min(1.0, (step - first) / max(1, total - first))
        return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return o.lr


class Trainer:
    """Train ``task`` under ``cfg``; see the module docstring.

    Parameters
    ----------
    cfg
        The validated config.
    task
        A task object; default: built from ``cfg.task`` through the registry.
    run_dir
        Output folder; default ``cfg.output_dir``.
    resume
        Continue from the newest valid checkpoint in ``run_dir/checkpoints`` (a fresh start if
        there is none). Without it, a run folder that holds checkpoints is an error.
    max_steps
        Stop (with a checkpoint) once this global step is reached, without changing the LR
        schedule, which always spans ``cfg.training.steps``.
    env
        Distributed environment; default: :func:`~molediff.training.distributed.init_distributed`.
    """

    def __init__(self, cfg: Config, task: Task | None = None, *, run_dir: str | Path | None = None,
                 resume: bool = False, max_steps: int | None = None, env: D.DistEnv | None = None) -> None:
        self.cfg = cfg
        self.task = check_task(task if task is not None else build_task(cfg.task))
        self.run_dir = Path(run_dir if run_dir is not None else cfg.output_dir)
        self.resume = resume
        self._warned_best_metric = False
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = min(max_steps, cfg.training.steps) if max_steps is not None else cfg.training.steps
        self.env = env if env is not None else D.init_distributed(cfg.training.device)
        self.ckpts = CheckpointManager(self.run_dir / "checkpoints", cfg.training.keep_last)
        self.step = self.epoch = self.batches_in_epoch = 0
        self.skipped_steps = 0  # steps whose optimiser / EMA update was skipped (non-finite gradients)
        self.consecutive_skips = 0
        self.last_step_skipped = False
        self.wall_time_s = 0.0
        self.best_value: float | None = None
        self.last_metrics: dict[str, float] = {}
        self._stop_signal: str | None = None
        self._t0: float | None = None
        self._window = _Window()
        self._setup()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, env = self.cfg, self.env
        seed = cfg.training.seed
        seed_everything(seed)  # identical init on every rank
        self.model: nn.Module = self.task.build_model(cfg).to(env.device)
        seed_everything(seed + 7919 * env.rank)
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.optimiser.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optimiser.lr,
                                           betas=cfg.optimiser.betas, eps=cfg.optimiser.eps)
        self.ema = EMA(self.model, cfg.ema.decay, warmup=cfg.ema.warmup) if cfg.ema.decay else None
        self.data_gen = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator(device=env.device).manual_seed(seed + 104729 * (env.rank + 1))
        self.loader = self.task.train_loader(cfg, env.rank, env.world_size, self.data_gen)
        self.ddp_model = D.wrap_model(self.model, env)
        self.precision = cfg.training.precision
        self._edge_precision_path = supports_reduced_precision(self.model)
        if self.precision == "bf16" and env.device.type != "cuda" and not self._edge_precision_path:
            warnings.warn("bf16 on CPU needs a network with a bf16 edge path (EGNN); training in fp32", stacklevel=2)
            self.precision = "fp32"
        if not self.resume and self.ckpts.steps():
            raise RunDirError(f"{self.run_dir} already holds checkpoints; pass resume=True (--resume) or another --out")
        self._epoch_data_state = self.data_gen.get_state()
        self._iter: Iterator[Any] | None = None
        self.resumed_from = self.ckpts.latest() if self.resume else None
        if self.resumed_from is not None:
            self._load(self.resumed_from)

    def _generators(self) -> dict[str, torch.Generator]:
        return {"data": self.data_gen, "noise": self.noise_gen}

    # ------------------------------------------------------------- checkpoint
    def _payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Collective (every rank calls it): tensors and sidecar of the current state."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        opt_tensors, opt_meta = flatten_optimizer_state(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        rng = capture_rng_state(self._generators())
        rng["epoch_start.data"] = self._epoch_data_state
        for key in sorted(rng):
            for r, t in enumerate(D.all_gather_tensor(rng[key], self.env.device)):
                tensors[f"rng.rank{r}.{key}"] = t
        meta = {
            "step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
            "config": self.cfg.to_dict(), "optimizer": opt_meta,
            "ema": None if self.ema is None else {"decay": self.ema.decay, "warmup": self.ema.warmup, "num_updates": self.ema.num_updates},
            "metrics": dict(self.last_metrics), "best_value": self.best_value, "log_window": self._window.state(),
            "skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips,
            "wall_time_s": self.wall_time_s + (0.0 if self._t0 is None else time.monotonic() - self._t0),
            "world_size": self.env.world_size, "hardware": _hardware(self.env), "versions": _versions(),
        }
        return tensors, meta

    def _must_be_finite(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Keys of the tensors a checkpoint may not hold NaN / inf in: parameters, EMA, optimiser state
        (buffers may legitimately hold infinities, e.g. masks)."""
        params = {f"model.{name}" for name, _ in self.model.named_parameters()}
        return [k for k in tensors if k in params or k.startswith(("ema.", "optim."))]

    def save_checkpoint(self, *, best: bool = False) -> Path | None:
        """Save a checkpoint (collective; rank 0 writes). Returns the sidecar path on rank 0.

        Raises
        ------
        NonFiniteTensorError
            On every rank, before anything is written, if the parameters, EMA or optimiser state
            hold NaN or inf on any rank.
        """
        tensors, meta = self._payload()
        finite = self._must_be_finite(tensors)
        bad = non_finite_keys(tensors, finite)
        if D.any_flag(bool(bad), self.env.device):  # every rank raises together, before anything is written
            shown = ", ".join(bad[:5]) if bad else "(on another rank)"
            raise NonFiniteTensorError(f"refusing to write the step {self.step} checkpoint in {self.ckpts.directory}: "
                                       f"NaN or inf in {shown}")
        path = self.ckpts.save(self.step, tensors, meta, best=best, require_finite=finite) if self.env.is_main else None
        D.barrier()
        return path

    def _load(self, path: Path) -> None:
        ck = load_checkpoint(path)
        meta = ck.meta
        if self.ema is not None and meta.get("ema") is None:
            raise CheckpointError(f"{path} holds no EMA state but the config enables EMA")
        try:
            self.model.load_state_dict(ck.section("model"))
            if self.ema is not None:
                # the average and its update count from the checkpoint; decay and warm-up as configured now
                self.ema.load_state_dict({**meta["ema"], "decay": self.ema.decay, "warmup": self.ema.warmup,
                                          "shadow": ck.section("ema")})
            configured = _hyperparameters(self.optimizer)
            self.optimizer.load_state_dict(unflatten_optimizer_state(ck.tensors, meta["optimizer"]))
            # the moments from the checkpoint; weight decay, betas and eps as configured now
            for group, hyper in zip(self.optimizer.param_groups, configured):
                group.update(hyper)
        except (RuntimeError, KeyError, ValueError) as exc:  # a changed model config: name the file and what differs
            raise CheckpointError(f"checkpoint {path} does not fit the configured model or optimiser: {exc}") from exc
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.batches_in_epoch = int(meta["batches_in_epoch"])
        self.wall_time_s = float(meta.get("wall_time_s", 0.0))
        self.best_value = meta.get("best_value")
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self.consecutive_skips = int(meta.get("consecutive_skips", 0))
        self.last_metrics = dict(meta.get("metrics", {}))
        self._window = _Window.from_state(meta.get("log_window"))
        rng = ck.section(f"rng.rank{self.env.rank}")  # empty on a rank the saving run did not have
        same_world = int(meta.get("world_size", 1)) == self.env.world_size
        saved_cfg = meta.get("config", {})
        saved_batch = int(saved_cfg.get("training", {}).get("batch_size", self.cfg.training.batch_size))
        data_now = self.cfg.to_dict()["data"]
        restart_epoch = (not same_world or saved_batch != self.cfg.training.batch_size
                         or saved_cfg.get("data", data_now) != data_now)
        if restart_epoch:
            self.batches_in_epoch = 0  # restart the epoch under the new sharding or batch size
        self._epoch_data_state = rng["epoch_start.data"] if same_world else self.data_gen.get_state()
        self.data_gen.set_state(self._epoch_data_state)
        self._iter = iter(self.loader)  # replay the epoch up to where the checkpoint was taken
        if not _replay(self._iter, self.batches_in_epoch):
            warnings.warn(f"{path}: the data yields fewer than the {self.batches_in_epoch} batches already consumed "
                          "in this epoch; the epoch restarts", stacklevel=2)
            self.batches_in_epoch, restart_epoch = 0, True
        if same_world:
            restore_rng_state(rng, self._generators())
        else:
            # the data generator is shared by all ranks (same seed, same draws): continue rank 0's saved one;
            # the per-rank streams have no counterpart under the new sharding, so they are reseeded from the
            # step (restarting them from their initial seeds replayed the run's first batches and noise)
            seed, rank = self.cfg.training.seed, self.env.rank
            self.data_gen.set_state(ck.tensors["rng.rank0.gen.data"])
            self.noise_gen.manual_seed(seed + 104729 * (rank + 1) + 1_000_003 * self.step)
            seed_everything(seed + 7919 * rank + self.step)
            warnings.warn(f"checkpoint was written with world size {meta.get('world_size')}, this run has "
                          f"{self.env.world_size}: the epoch restarts, the noise and global RNG streams are "
                          "reseeded from the step (reproducible, not bitwise an uninterrupted run)", stacklevel=2)
        if restart_epoch:
            self._iter = None  # the new epoch draws from the generators as restored; _next_batch records its start

    # ------------------------------------------------------------------ loop
    def _next_batch(self) -> Any:
        if self._iter is None:
            self._epoch_data_state = self.data_gen.get_state()
            self._iter = iter(self.loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            if self.batches_in_epoch == 0:
                raise RuntimeError("the task's train_loader yielded no batches") from None
            self.epoch += 1
            self.batches_in_epoch = 0
            self._iter = None
            return self._next_batch()
        self.batches_in_epoch += 1
        return batch

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16: the network's own per-edge bf16 path where it has one (positions and sums stay fp32),
        else CUDA autocast; fp32: nothing."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        if self._edge_precision_path:
            return edge_precision(self.model, "bf16")
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

    def train_step(self) -> tuple[float, dict[str, float], float | None, float]:
        """One optimiser step; returns ``(loss, metrics, grad_norm, lr)``.

        A NaN / inf gradient norm skips the optimiser and EMA updates (``last_step_skipped``; the step
        still counts and its batch is consumed); the decision is taken jointly by all ranks. More than
        ``optimiser.max_skipped_steps`` skips in a row raise :class:`NonFiniteGradientError`.
        """
        batch = move_to_device(self._next_batch(), self.env.device)
        self.ddp_model.train()
        with self._autocast():
            loss, metrics = self.task.loss(self.ddp_model, batch, self.noise_gen)
        value = float(loss.detach().float().item())
        if D.any_flag(not math.isfinite(value), self.env.device):  # every rank raises together
            raise NonFiniteLossError(f"non-finite loss at step {self.step} (epoch {self.epoch}; this rank: {value})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if self.cfg.optimiser.grad_clip is not None:
            grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optimiser.grad_clip))
            total = grad_norm
        else:
            total = _grad_norm(self.model)
        lr = lr_at(self.step, self.cfg)
        # DDP has all-reduced the gradients, so the norm agrees across ranks; the flag makes it certain
        self.last_step_skipped = D.any_flag(not math.isfinite(total), self.env.device)
        if self.last_step_skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.consecutive_skips += 1
            if self.consecutive_skips > self.cfg.optimiser.max_skipped_steps:
                raise NonFiniteGradientError(
                    f"non-finite gradient norm at step {self.step} (epoch {self.epoch}; this rank: {total}), "
                    f"{self.consecutive_skips} steps in a row (optimiser.max_skipped_steps = "
                    f"{self.cfg.optimiser.max_skipped_steps})")
        else:
            self.consecutive_skips = 0
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        self.step += 1
        return value, {k: float(v) for k, v in metrics.items()}, grad_norm, lr

    def evaluate(self) -> dict[str, float]:
        """Run ``task.evaluate`` on rank 0 with EMA weights (``{}`` if the task has none)."""
        fn = getattr(self.task, "evaluate", None)
        out: dict[str, float] = {}
        if fn is not None and self.env.is_main:
            swap = self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()
            self.model.eval()
            try:
                with swap:
                    raw = fn(self.model, self.cfg) or {}
            finally:
                self.model.train()
            out = {(k if "/" in k else f"val/{k}"): float(v) for k, v in raw.items()}
        D.barrier()
        return out

    def _improved(self, metrics: dict[str, float]) -> bool:
        name = self.cfg.training.best_metric
        ok = False
        if self.env.is_main and name is not None:
            if name in metrics:
                value = metrics[name]
                sign = 1.0 if self.cfg.training.best_mode == "min" else -1.0
                ok = self.best_value is None or sign * value < sign * self.best_value
                if ok:
                    self.best_value = value
            elif not self._warned_best_metric:  # a typo would otherwise never keep a best checkpoint, silently
                self._warned_best_metric = True
                warnings.warn(f"training.best_metric {name!r} is not among the evaluation's metrics "
                              f"({', '.join(sorted(metrics)) or 'none'}); no best checkpoint is kept",
                              RuntimeWarning, stacklevel=2)
        return D.any_flag(ok, self.env.device)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def fit(self) -> TrainResult:
        """Train until ``training.steps`` / ``max_steps``, the time budget or a signal; checkpoint and export."""
        cfg, t, env = self.cfg, self.cfg.training, self.env
        self._t0 = time.monotonic()
        log = RunLog(self.run_dir / "log.jsonl" if env.is_main else None, total=t.steps, initial=self.step,
                     progress=t.progress and env.is_main)
        if env.is_main:
            log.truncate_after(self.step)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        budget = None if t.max_minutes is None else 60.0 * t.max_minutes
        reason, ckpt, window = "completed", None, self._window
        saved_at = self.step if self.resumed_from is not None else -1  # nothing new to save yet
        with self._signals():
            try:
                while self.step < self.max_steps:
                    loss, metrics, grad_norm, lr = self.train_step()
                    window.add(loss, metrics)
                    log.advance(1, loss=loss, lr=lr)
                    if self.last_step_skipped:
                        log.write({"kind": "skip", "step": self.step, "epoch": self.epoch, "loss": loss,
                                   "grad_norm": grad_norm, "skipped_steps": self.skipped_steps})
                        log.message(f"step {self.step}: non-finite gradient norm; optimiser and EMA update skipped "
                                    f"({self.consecutive_skips} in a row, {self.skipped_steps} in all)")
                    if t.log_every and self.step % t.log_every == 0:
                        row = {"kind": "train", "step": self.step, "epoch": self.epoch,
                               "loss": D.all_reduce_mean(window.loss(), env.device), "lr": lr, "grad_norm": grad_norm,
                               "skipped_steps": self.skipped_steps,
                               **window.metrics(), "time_s": round(time.monotonic() - self._t0, 3)}
                        self.last_metrics.update({k: v for k, v in row.items() if isinstance(v, float)})
                        log.write(row)
                        window = self._window = _Window()
                    best = False
                    if t.eval_every and (self.step % t.eval_every == 0 or self.step == t.steps):
                        val = self.evaluate()
                        if val:
                            self.last_metrics.update(val)
                            log.write({"kind": "val", "step": self.step, "epoch": self.epoch, **val})
                            log.message(f"step {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in val.items()))
                        best = self._improved(val)
                    if (t.ckpt_every and self.step % t.ckpt_every == 0) or best:
                        ckpt, saved_at = self.save_checkpoint(best=best), self.step
                    out_of_time = budget is not None and time.monotonic() - self._t0 >= budget
                    if D.any_flag(self._stop_signal is not None or out_of_time, env.device):
                        reason = "signal" if self._stop_signal else "max_minutes"
                        break
                else:
                    reason = "completed" if self.step >= t.steps else "max_steps"
                if saved_at != self.step:
                    ckpt = self.save_checkpoint()
            finally:
                log.close()
        self.wall_time_s += time.monotonic() - self._t0
        self._t0 = None
        export = self.export() if env.is_main else None
        D.barrier()
        if env.is_main:
            log.message(f"stopped at step {self.step} ({reason}); checkpoint {ckpt}")
        return TrainResult(self.step, self.epoch, reason, ckpt, export, dict(self.last_metrics))

    def close(self) -> None:
        """Drop the data-parallel wrapper (and with it this trainer's hold on the process group).

        Call before :func:`~molediff.training.distributed.shutdown_distributed`; the trainer's
        model, EMA and checkpoints stay usable, it just cannot train data-parallel again.
        """
        self.ddp_model = self.model

    def export(self, directory: str | Path | None = None) -> Path:
        """Write the EMA (or raw) weights as ``model.safetensors`` + ``model.json`` (rank 0)."""
        state = self.ema.averaged_state_dict(self.model) if self.ema is not None else self.model.state_dict()
        card_fn = getattr(self.task, "model_card", None)
        card = card_fn(self.cfg, self.model) if card_fn is not None else {}
        params = [name for name, _ in self.model.named_parameters()]
        return export_model(directory or self.run_dir, state, self.cfg.to_dict(), step=self.step,
                            metrics=self.last_metrics, card=card, require_finite=params)


class _Window:
    """Running means of the loss and metrics between two log rows."""

    def __init__(self) -> None:
        self.n, self._loss = 0, 0.0
        self._m: dict[str, float] = {}

    def add(self, loss: float, metrics: dict[str, float]) -> None:
        self.n += 1
        self._loss += loss
        for k, v in metrics.items():
            self._m[k] = self._m.get(k, 0.0) + v

    def loss(self) -> float:
        return self._loss / max(1, self.n)

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "loss": self._loss, "metrics": dict(self._m)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> _Window:
        w = cls()
        if state:
            w.n, w._loss, w._m = int(state["n"]), float(state["loss"]), dict(state["metrics"])
        return w

    def metrics(self) -> dict[str, float]:
        return {k: v / max(1, self.n) for k, v in self._m.items()}


def _hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings (everything but its parameters and learning rate), in group order."""
    return [{k: v for k, v in group.items() if k not in ("params", "lr")} for group in optimizer.param_groups]


def _replay(batches: Iterator[Any], n: int) -> bool:
    """Draw ``n`` batches from ``batches``; ``False`` if it runs out first."""
    for _ in range(n):
        try:
            next(batches)
        except StopIteration:
            return False
    return True


def _grad_norm(model: nn.Module) -> float:
    """Global L2 norm of the gradients (NaN / inf if any gradient is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _hardware(env: D.DistEnv) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.machine(),
                            "device": str(env.device), "world_size": env.world_size}
    if env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
    return info


def _versions() -> dict[str, str]:
    import numpy
    import safetensors

    from molediff import __version__

    return {"molediff": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "safetensors": safetensors.__version__}
