import math
import os
import pickle
import signal

import pytest
import torch

from molediff.training.checkpoint import CheckpointError, load_checkpoint
from molediff.training.config import config_from_dict
from molediff.training.export import load_exported
from molediff.training.logging import read_log
from molediff.training.toy_task import ToyDenoiser, ToyModelConfig, ToyTask
from molediff.training.trainer import (
    NonFiniteGradientError,
    NonFiniteLossError,
    NonFiniteTensorError,
    RunDirError,
    Trainer,
    lr_at,
)

from tests.training.conftest import toy_raw


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    for k in a.ema.shadow:
        assert torch.equal(a.ema.shadow[k], b.ema.shadow[k]), k
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for idx in sa:
        for name in sa[idx]:
            assert torch.equal(sa[idx][name], sb[idx][name])


def test_exact_bitwise_resume(tmp_path, toy_config, monkeypatch):
    # 96 points / batch 16 = 6 batches per epoch: stopping at step 9 is mid-epoch; dropout uses the global RNG.
    straight = Trainer(toy_config(tmp_path / "a", steps=20, eval_every=5, ckpt_every=4))
    straight.fit()
    first = Trainer(toy_config(tmp_path / "b", steps=20, eval_every=5, ckpt_every=4), max_steps=9)
    assert first.fit().reason == "max_steps"

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    torch.manual_seed(12345)  # a fresh process would start from different global RNG states
    resumed = Trainer(toy_config(tmp_path / "b", steps=20, eval_every=5, ckpt_every=4), task=ToyTask(), resume=True)
    assert (resumed.step, resumed.batches_in_epoch) == (9, 3)
    result = resumed.fit()
    assert result.reason == "completed" and result.step == 20 and result.epoch == straight.epoch
    _assert_same_state(straight, resumed)
    # the logs agree too (rows after the resume point are not duplicated)
    rows_a = [r for r in read_log(tmp_path / "a" / "log.jsonl")]
    rows_b = [r for r in read_log(tmp_path / "b" / "log.jsonl")]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


def test_resume_with_a_larger_batch_restarts_the_epoch(tmp_path, toy_config):
    # 96 points / batch 16: stopped 5 batches into an epoch; batch 48 has only 2 per epoch, so the old
    # position cannot be replayed (this raised StopIteration on resume before).
    first = Trainer(toy_config(tmp_path / "b", steps=20, ckpt_every=5), max_steps=5)
    first.fit()
    assert first.batches_in_epoch == 5
    resumed = Trainer(toy_config(tmp_path / "b", steps=8, batch_size=48), resume=True)
    assert (resumed.step, resumed.batches_in_epoch) == (5, 0)
    result = resumed.fit()
    assert result.reason == "completed" and result.step == 8


def test_resume_under_another_world_size_draws_new_data_and_noise(tmp_path, toy_config):
    """A checkpoint of another world size restarted the data and noise generators from their initial seeds:
    every such resume replayed the data order and noise of the run's first steps (the warning said reseeded)."""
    import json

    def first_draws(trainer):
        return trainer._next_batch(), torch.rand(4, generator=trainer.noise_gen)

    fresh = first_draws(Trainer(toy_config(tmp_path / "fresh", steps=30)))
    Trainer(toy_config(tmp_path / "run", steps=30, ckpt_every=8), max_steps=16).fit()
    ckpts = tmp_path / "run" / "checkpoints"
    for sidecar in ckpts.glob("step_*.json"):  # as if written by two ranks (the checksum covers the tensors only)
        meta = json.loads(sidecar.read_text())
        meta["world_size"] = 2
        sidecar.write_text(json.dumps(meta))
    resumed = {}
    for step in (16, 8):
        for _ in range(2):
            with pytest.warns(UserWarning, match="world size 2"):
                trainer = Trainer(toy_config(tmp_path / "run", steps=30, ckpt_every=8), resume=True)
            assert trainer.step == step and trainer.batches_in_epoch == 0
            draws = first_draws(trainer)
            assert not torch.equal(draws[0], fresh[0]) and not torch.equal(draws[1], fresh[1])
            if step in resumed:  # reproducible
                assert all(torch.equal(a, b) for a, b in zip(draws, resumed[step]))
            resumed[step] = draws
        (ckpts / "step_00000016.json").unlink(missing_ok=True)
    assert not torch.equal(resumed[8][0], resumed[16][0]) and not torch.equal(resumed[8][1], resumed[16][1])


def test_resume_diverges_without_restoring_rng(tmp_path, toy_config):
    """Guard against a vacuous resume test: a fresh run with another seed must differ."""
    a = Trainer(toy_config(tmp_path / "a", steps=6))
    a.fit()
    b = Trainer(toy_config(tmp_path / "b", steps=6, seed=4))
    b.fit()
    assert not torch.equal(a.model.net[0].weight, b.model.net[0].weight)


def test_outputs_checkpoints_and_export(tmp_path, toy_config):
    cfg = toy_config(tmp_path, steps=12, eval_every=4, ckpt_every=4, keep_last=2, best_metric="val/loss")
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert result.reason == "completed" and "val/loss" in result.metrics
    assert trainer.ckpts.steps() == [8, 12] and trainer.ckpts.best() is not None
    meta = load_checkpoint(result.checkpoint).meta
    assert meta["step"] == 12 and meta["config"]["task"] == "toy" and meta["versions"]["torch"] == torch.__version__
    assert {"param_groups", "state"} <= set(meta["optimizer"]) and meta["wall_time_s"] > 0
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [5, 10]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [4, 8, 12]
    state, card = load_exported(tmp_path)
    assert card["card"]["parameters"] > 0 and card["step"] == 12
    for k, v in trainer.ema.shadow.items():
        assert torch.equal(state[k], v)
    model = ToyDenoiser(ToyModelConfig(hidden=16, layers=2))
    model.load_state_dict(state)  # shipped weights load into a freshly built network


def test_lr_schedule_warmup_and_cosine(tmp_path):
    cfg = config_from_dict(toy_raw(tmp_path, steps=14))  # lr 3e-3, warmup 4, cosine to 0
    assert lr_at(0, cfg) == pytest.approx(3e-3 / 4)
    assert lr_at(3, cfg) == pytest.approx(3e-3)
    assert lr_at(9, cfg) == pytest.approx(3e-3 * 0.5)
    assert lr_at(14, cfg) == pytest.approx(0.0, abs=1e-12)


def test_lr_schedule_warm_restart(tmp_path):
    raw = toy_raw(tmp_path, steps=30)  # lr 3e-3, warmup 4, cosine to 0 at step 30
    plain = config_from_dict(raw)
    raw["optimiser"]["restart_step"] = 10
    cfg = config_from_dict(raw)
    for step in range(10):  # before the restart: the original schedule
        assert lr_at(step, cfg) == lr_at(step, plain)
    assert lr_at(9, cfg) < 3e-3 * 0.95  # decaying by then
    assert lr_at(10, cfg) == pytest.approx(3e-3 / 4)  # warm-up again
    assert lr_at(13, cfg) == pytest.approx(3e-3)
    assert lr_at(22, cfg) == pytest.approx(3e-3 * 0.5)  # half-way along the restarted cosine (14 -> 30)
    assert lr_at(30, cfg) == pytest.approx(0.0, abs=1e-12)
    raw["optimiser"]["restart_step"] = -1
    with pytest.raises(Exception, match="restart_step"):
        config_from_dict(raw)


def test_refuses_to_overwrite_run_without_resume(tmp_path, toy_config):
    Trainer(toy_config(tmp_path, steps=2)).fit()
    with pytest.raises(RunDirError):
        Trainer(toy_config(tmp_path, steps=4))
    t = Trainer(toy_config(tmp_path, steps=4), resume=True)
    assert t.step == 2 and t.fit().step == 4


def test_signal_stops_with_checkpoint(tmp_path, toy_config):
    class Interrupting(ToyTask):
        calls = 0

        def loss(self, model, batch, generator):
            Interrupting.calls += 1
            if Interrupting.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().loss(model, batch, generator)

    trainer = Trainer(toy_config(tmp_path, steps=50), task=Interrupting())
    result = trainer.fit()
    assert result.reason == "signal" and result.step == 3
    assert load_checkpoint(result.checkpoint).meta["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_time_budget_stops_cleanly(tmp_path, toy_config, monkeypatch):
    import molediff.training.trainer as tr

    clock = iter(range(0, 10**6, 40))  # 40 s per call to time.monotonic
    monkeypatch.setattr(tr.time, "monotonic", lambda: float(next(clock)))
    result = Trainer(toy_config(tmp_path, steps=50, max_minutes=2.0)).fit()
    assert result.reason == "max_minutes" and 0 < result.step < 50
    assert load_checkpoint(result.checkpoint).meta["step"] == result.step
    assert (tmp_path / "model.safetensors").is_file()


def test_non_finite_loss_raises(tmp_path, toy_config):
    class Exploding(ToyTask):
        def loss(self, model, batch, generator):
            loss, m = super().loss(model, batch, generator)
            return loss * math.inf, m

    with pytest.raises(NonFiniteLossError, match="step 0"):
        Trainer(toy_config(tmp_path, steps=3), task=Exploding()).fit()


class NaNGradients(ToyTask):
    """A finite loss whose gradients are NaN on the given calls (sqrt at 0, as for coincident atoms)."""

    def __init__(self, bad_calls):
        super().__init__()
        self.bad_calls, self.calls = bad_calls, 0

    def loss(self, model, batch, generator):
        loss, m = super().loss(model, batch, generator)
        if self.calls in self.bad_calls:
            w = next(model.parameters())
            loss = loss + 0.0 * torch.sqrt((w - w.detach()).square().sum())
        self.calls += 1
        return loss, m


def _all_finite(tensors):
    return all(bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point())


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_non_finite_gradients_skip_the_step(tmp_path, grad_clip):
    """A finite loss with NaN gradients wrote NaN into the weights and EMA, and a checkpoint of them, before
    the next step's loss check stopped the run."""
    raw = toy_raw(tmp_path, steps=6, ckpt_every=1)
    raw["optimiser"]["grad_clip"] = grad_clip
    trainer = Trainer(config_from_dict(raw), task=NaNGradients({2}))
    result = trainer.fit()
    assert result.reason == "completed" and result.step == 6
    assert trainer.skipped_steps == 1 and trainer.consecutive_skips == 0
    assert _all_finite(trainer.model.state_dict()) and _all_finite(trainer.ema.shadow)
    assert trainer.ema.num_updates == 5 and trainer.optimizer.state_dict()["state"][0]["step"] == 5
    for step in trainer.ckpts.steps():
        assert _all_finite(load_checkpoint(trainer.ckpts.stem(step)).tensors), step
    assert _all_finite(load_exported(tmp_path)[0])
    skips = [r for r in read_log(tmp_path / "log.jsonl") if r["kind"] == "skip"]
    assert [(r["step"], r["skipped_steps"]) for r in skips] == [(3, 1)]
    resumed = Trainer(config_from_dict(toy_raw(tmp_path, steps=8, ckpt_every=1)), resume=True)
    assert resumed.skipped_steps == 1


def test_consecutive_non_finite_gradients_stop_with_a_typed_error(tmp_path):
    raw = toy_raw(tmp_path, steps=10, ckpt_every=1)
    raw["optimiser"]["max_skipped_steps"] = 2
    trainer = Trainer(config_from_dict(raw), task=NaNGradients(set(range(1, 10))))
    with pytest.raises(NonFiniteGradientError, match="step 3 .*3 steps in a row"):
        trainer.fit()
    assert trainer.skipped_steps == 3 and trainer.ckpts.steps() == [1, 2, 3]
    for step in trainer.ckpts.steps():
        assert _all_finite(load_checkpoint(trainer.ckpts.stem(step)).tensors), step


def test_non_finite_parameters_are_never_written(tmp_path, toy_config):
    trainer = Trainer(toy_config(tmp_path, steps=2))
    trainer.fit()
    with torch.no_grad():
        trainer.ema.shadow["net.0.weight"][0, 0] = math.nan
    with pytest.raises(NonFiniteTensorError, match="ema.net.0.weight"):
        trainer.save_checkpoint()
    with pytest.raises(NonFiniteTensorError, match="net.0.weight"):
        trainer.export(tmp_path / "export")
    with torch.no_grad():
        trainer.model.net[0].bias[0] = math.inf
    with pytest.raises(NonFiniteTensorError, match="model.net.0.bias"):
        trainer.save_checkpoint()
    assert trainer.ckpts.steps() == [2] and not (tmp_path / "export").exists()


def test_resume_with_another_model_names_the_checkpoint(tmp_path, toy_config):
    """A changed network was a bare RuntimeError (size mismatch) that did not say which file was loaded."""
    Trainer(toy_config(tmp_path, steps=2)).fit()
    raw = toy_raw(tmp_path, steps=4)
    raw["model"]["hidden"] = 8
    with pytest.raises(CheckpointError, match="(?s)step_00000002.json does not fit the configured model.*size mismatch"):
        Trainer(config_from_dict(raw), resume=True)


def test_bf16_falls_back_to_fp32_on_cpu(tmp_path, toy_config):
    with pytest.warns(UserWarning, match="bf16"):
        trainer = Trainer(toy_config(tmp_path, steps=2, precision="bf16"))
    assert trainer.precision == "fp32"


def test_bf16_uses_the_network_edge_path_on_cpu(tmp_path, toy_config):
    class EdgeDtypeToyTask(ToyTask):  # a network exposing a bf16 edge path, like EGNN
        def build_model(self, cfg):
            model = super().build_model(cfg)
            model.edge_dtype = None
            return model

    trainer = Trainer(toy_config(tmp_path, steps=2, precision="bf16"), task=EdgeDtypeToyTask())
    assert trainer.precision == "bf16"
    with trainer._autocast():
        assert trainer.model.edge_dtype is torch.bfloat16
    assert trainer.model.edge_dtype is None
    trainer.fit()


def test_not_a_task_is_a_type_error(tmp_path, toy_config):
    with pytest.raises(TypeError, match="missing method"):
        Trainer(toy_config(tmp_path), task=object())


def test_exact_resume_within_an_epoch_restarted_by_a_batch_size_change(tmp_path, toy_config):
    """After a resume that restarts the epoch (new batch size), a second resume inside that epoch must
    replay the batches that were actually drawn (the epoch's start state was recorded before the
    generators were restored, so the replay drew another permutation)."""
    import shutil

    Trainer(toy_config(tmp_path / "a", steps=20, ckpt_every=5), max_steps=5).fit()  # 5 of 6 batches of 16
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    straight = Trainer(toy_config(tmp_path / "a", steps=10, batch_size=24), resume=True)
    assert straight.fit().step == 10
    first = Trainer(toy_config(tmp_path / "b", steps=10, batch_size=24), resume=True, max_steps=7)
    assert first.fit().reason == "max_steps" and first.batches_in_epoch == 2  # 2 of 4 batches of 24
    resumed = Trainer(toy_config(tmp_path / "b", steps=10, batch_size=24), resume=True)
    assert (resumed.step, resumed.batches_in_epoch) == (7, 2)
    assert resumed.fit().step == 10
    _assert_same_state(straight, resumed)


def test_resume_uses_the_configured_ema_decay(tmp_path, toy_config):
    """The resumed run's config (written to config.yaml and the export) must be the one in force: a changed
    ``ema.decay`` was silently replaced by the checkpoint's."""
    Trainer(toy_config(tmp_path, steps=4)).fit()  # ema.decay 0.9
    raw = toy_raw(tmp_path, steps=6)
    raw["ema"] = {"decay": 0.5, "warmup": False}
    resumed = Trainer(config_from_dict(raw), resume=True)
    assert resumed.ema.num_updates == 4  # the average and its count are restored ...
    assert (resumed.ema.decay, resumed.ema.warmup) == (0.5, False)  # ... the schedule is the configured one


def test_resume_uses_the_configured_optimiser_hyperparameters(tmp_path, toy_config):
    """A changed ``optimiser.weight_decay`` / ``betas`` / ``eps`` was silently replaced on resume by the
    checkpoint's values (``optimizer.load_state_dict`` restores the saved param groups)."""
    Trainer(toy_config(tmp_path, steps=4)).fit()  # weight_decay 0.01, betas (0.9, 0.999), eps 1e-8
    raw = toy_raw(tmp_path, steps=6)
    raw["optimiser"].update(weight_decay=0.5, betas=[0.8, 0.9], eps=1e-6)
    resumed = Trainer(config_from_dict(raw), resume=True)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 4  # the moments are restored ...
    groups = [(g["weight_decay"], tuple(g["betas"]), g["eps"]) for g in resumed.optimizer.param_groups]
    assert groups == [(0.5, (0.8, 0.9), 1e-6), (0.0, (0.8, 0.9), 1e-6)]  # ... the hyperparameters are configured


def test_resume_with_a_smaller_data_set_restarts_the_epoch(tmp_path, toy_config):
    """A changed ``data`` section whose epoch is shorter than the saved position raised a bare StopIteration
    while replaying the epoch on resume."""
    Trainer(toy_config(tmp_path, steps=20, ckpt_every=5), max_steps=5).fit()  # 5 of 6 batches of 16
    raw = toy_raw(tmp_path, steps=8)
    raw["data"]["num_points"] = 64  # 4 batches per epoch
    resumed = Trainer(config_from_dict(raw), resume=True)
    assert (resumed.step, resumed.batches_in_epoch) == (5, 0)
    assert resumed.fit().step == 8


def test_max_steps_must_be_positive(tmp_path, toy_config):
    """``max_steps=-3`` was accepted: it wrote a step-0 checkpoint and exported untrained weights."""
    with pytest.raises(ValueError, match="max_steps"):
        Trainer(toy_config(tmp_path, steps=5), max_steps=-3)
    assert not (tmp_path / "checkpoints").exists()


def test_resume_whose_epoch_replay_runs_out_restarts_the_epoch(tmp_path, toy_config):
    """A loader that yields fewer batches than the saved position (the task's data changed outside the
    config) raised a bare StopIteration on resume."""

    class Shorter(ToyTask):
        def train_loader(self, cfg, rank, world_size, generator):
            loader = super().train_loader(cfg, rank, world_size, generator)
            loader.points = loader.points[:64]
            loader.sampler.num_items = 64
            return loader

    Trainer(toy_config(tmp_path, steps=20, ckpt_every=5), max_steps=5).fit()  # 5 of 6 batches of 16
    with pytest.warns(UserWarning, match="epoch restarts"):
        resumed = Trainer(toy_config(tmp_path, steps=8), task=Shorter(), resume=True)
    assert (resumed.step, resumed.batches_in_epoch) == (5, 0)
    assert resumed.fit().step == 8


def test_a_best_metric_the_evaluation_never_reports_is_warned_about_once(tmp_path, toy_config):
    cfg = toy_config(tmp_path, steps=8, eval_every=4, ckpt_every=4, best_metric="val/los")  # a typo
    with pytest.warns(RuntimeWarning, match=r"val/los.*val/loss") as caught:
        Trainer(cfg).fit()
    assert sum("val/los" in str(w.message) for w in caught) == 1
