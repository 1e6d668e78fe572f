import pytest

from molediff.training.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_section,
)
from molediff.training.registry import TASKS, TaskResolutionError, build_task, register_task, resolve_task
from molediff.training.toy_task import ToyModelConfig, ToyTask

YAML = """
task: toy
output_dir: runs/x
network: {hidden: 8}
diffusion: {sigma_max: 3.0}
optimizer:
  lr: 1.0e-4
  betas: [0.9, 0.99]
  grad_clip: null
training:
  steps: 10
  precision: bf16
"""


def test_load_yaml_with_aliases_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    assert cfg.model == {"hidden": 8} and cfg.schedule == {"sigma_max": 3.0}
    assert cfg.optimiser.lr == 1e-4 and cfg.optimiser.betas == (0.9, 0.99) and cfg.optimiser.grad_clip is None
    assert cfg.training.steps == 10 and cfg.training.precision == "bf16"
    assert config_from_dict(cfg.to_dict()) == cfg  # round trip through plain dicts


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    cfg = load_config(path, ["training.steps=5", "optimiser.lr=3e-3", "model.widths=[1, 2]", "ema.decay=null"])
    assert cfg.training.steps == 5 and cfg.optimiser.lr == 3e-3
    assert cfg.model["widths"] == [1, 2] and cfg.ema.decay is None
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["training.steps"])


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"task": "toy", "trainig": {}}, "did you mean 'training'"),
        ({"task": "toy", "training": {"stpes": 3}}, "unknown key 'training.stpes'; did you mean 'steps'"),
        ({"training": {}}, "missing required key 'task'"),
        ({"task": "toy", "training": {"steps": "many"}}, "training.steps must be an integer"),
        ({"task": "toy", "training": {"steps": 0}}, "training.steps must be >= 1"),
        ({"task": "toy", "training": {"precision": "fp16"}}, "precision"),
        ({"task": "toy", "training": {"device": "tpu"}}, "device"),
        ({"task": "toy", "optimiser": {"lr": -1}}, "optimiser.lr must be > 0"),
        ({"task": "toy", "optimiser": {"betas": [0.9]}}, "betas"),
        ({"task": "toy", "optimiser": {"lr_schedule": "step"}}, "lr_schedule"),
        ({"task": "toy", "ema": {"decay": 1.5}}, "ema.decay"),
        ({"task": "toy", "model": [1, 2]}, "'model' must be a mapping"),
        ({"task": "toy", "model": {}, "network": {}}, "given twice"),
        ({"task": "toy", "training": {"progress": "yes"}}, "true or false"),
        ({"task": "toy", "output_dir": None}, "output_dir must be a non-empty path"),
        ({"task": "toy", "training": {"best_metric": "val/loss"}}, "best_metric needs training.eval_every"),
        ({"task": "toy", "training": {"steps": 100}, "optimiser": {"restart_step": 100}},
         "restart_step must be < training.steps"),
    ],
)
def test_validation_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: toy\ntraining: {steps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("task: toy\nfoo: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'foo'"):
        load_config(bad)


def test_parse_section_for_task_dataclasses():
    assert parse_section(ToyModelConfig, {"hidden": 4}, "model.").hidden == 4
    with pytest.raises(ConfigError, match="unknown key 'model.hiden'; did you mean 'hidden'"):
        parse_section(ToyModelConfig, {"hiden": 4}, "model.")


def test_task_registry_resolution(monkeypatch):
    assert isinstance(build_task("toy"), ToyTask)
    assert resolve_task("molediff.training.toy_task:ToyTask") is ToyTask
    monkeypatch.setitem(TASKS, "mine", "molediff.training.toy_task:ToyTask")
    assert resolve_task("mine") is ToyTask
    with pytest.raises(TaskResolutionError, match="already registered"):
        register_task("mine", "x:y")
    for bad, msg in [("nonsense", "neither a registered name"), ("no_such_mod_xyz:T", "cannot import"),
                     ("molediff.training.toy_task:Nope", "no attribute"), ("molediff.training.toy_task:__doc__", "not callable")]:
        with pytest.raises(TaskResolutionError, match=msg):
            resolve_task(bad)
