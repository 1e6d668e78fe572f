"""Training task, model loading, sampling and the sample-points CLI on a tiny model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

import molediff
from molediff.data.shapes import SHAPE_CLASSES
from molediff.pointcloud import cli
from molediff.pointcloud.io import load_point_cloud
from molediff.pointcloud.sample import ModelLoadError, generate_point_clouds, load_point_model, parse_labels
from molediff.pointcloud.training_task import PointCloudTask
from molediff.training.config import ConfigError, config_from_dict
from molediff.training.trainer import Trainer

SHIPPED = Path(molediff.__file__).parent / "weights"


def _config(tmp_path, network: str = "pointnet", **data):
    return config_from_dict({
        "task": "molediff.pointcloud.training_task:PointCloudTask",
        "output_dir": str(tmp_path / "run"),
        "model": {"network": network, "hidden": 16, "num_layers": 1, "knn": 4, "class_dropout": 0.5},
        "data": {"num_points": 16, "num_per_class": 2, "val_per_class": 1, **data},
        "training": {"steps": 3, "batch_size": 4, "eval_every": 3, "ckpt_every": 0, "progress": False},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pc")
    result = Trainer(_config(tmp)).fit()
    assert result.step == 3 and "val/loss" in result.metrics
    return tmp / "run"


def test_task_loss_and_class_dropout(tmp_path):
    task = PointCloudTask()
    cfg = _config(tmp_path, network="egnn")
    model = task.build_model(cfg)
    loader = task.train_loader(cfg, 0, 1, torch.Generator().manual_seed(0))
    points, labels = next(iter(loader))
    assert points.shape == (4, 16, 3) and labels.shape == (4,)
    loss, _ = task.loss(model, (points, labels), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ConfigError, match="unknown shape class"):
        task.build_model(_config(tmp_path, classes=["teapot"]))


def test_load_and_generate(trained):
    model, info = load_point_model(trained)
    assert info["step"] == 3
    labels = parse_labels("all", 3)
    assert labels.tolist() == [0, 1, 2]
    clouds = generate_point_clouds(model, labels, 10, steps=3, sigma_max=5.0)
    assert clouds.shape == (3, 10, 3)
    torch.testing.assert_close(clouds.mean(dim=1), torch.zeros(3, 3), atol=1e-5, rtol=0)
    again = generate_point_clouds(model, labels, 10, steps=3, sigma_max=5.0)
    torch.testing.assert_close(clouds, again)  # deterministic by seed
    guided = generate_point_clouds(model, labels, 10, steps=3, sigma_max=5.0, guidance=2.0)
    assert guided.shape == clouds.shape and not torch.allclose(guided, clouds)
    ckpt, _ = load_point_model(next((trained / "checkpoints").glob("step_*.json")))
    assert isinstance(ckpt, torch.nn.Module)
    with pytest.raises(ModelLoadError):
        load_point_model(trained / "missing")
    for name in ("pointcloud_egnn", "pointcloud_pointnet"):  # the shipped ones, checked against their checksum
        assert isinstance(load_point_model(SHIPPED / name)[0], torch.nn.Module)


def test_a_corrupted_trainer_checkpoint_is_a_model_load_error(trained, tmp_path):
    import shutil

    sidecar = next((trained / "checkpoints").glob("step_*.json"))
    for path in (sidecar, sidecar.with_suffix(".safetensors")):
        shutil.copy(path, tmp_path / path.name)
    tensors = tmp_path / sidecar.with_suffix(".safetensors").name
    data = bytearray(tensors.read_bytes())
    data[-8] ^= 0xFF  # a flipped bit in a weight: still readable safetensors, other numbers
    tensors.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="do not match the checksum"):
        load_point_model(tmp_path / sidecar.name)


def test_a_model_whose_name_has_a_dot_loads_by_its_stem(tmp_path):
    """``pc.v2`` (files ``pc.v2.json`` / ``pc.v2.safetensors``) looked for ``pc.json`` and ``pc.safetensors``."""
    import shutil

    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED / f"pointcloud_pointnet{suffix}", tmp_path / f"pc.v2{suffix}")
    for given in ("pc.v2", "pc.v2.json", "pc.v2.safetensors"):
        assert isinstance(load_point_model(tmp_path / given)[0], torch.nn.Module)


def test_corrupted_point_model_weights_are_a_model_load_error(tmp_path):
    import shutil

    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED / f"pointcloud_egnn{suffix}", tmp_path / f"m{suffix}")
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="do not match the SHA-256"):
        load_point_model(tmp_path / "m.json")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read the model description"):
        load_point_model(tmp_path / "m.json")
    with pytest.raises(ValueError, match="unknown class"):
        parse_labels("teapot", 2)
    assert parse_labels("none", 2).tolist() == [len(SHAPE_CLASSES)] * 2


def test_sample_points_cli(trained, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "samples"
    args = parser.parse_args(["--checkpoint", str(trained), "--class", "torus", "--count", "2", "--points", "12",
                              "--steps", "2", "--out", str(out)])
    assert cli.run(args) == 0
    with np.load(out / "points.npz") as data:
        assert data["points"].shape == (2, 12, 3)
        assert data["labels"].tolist() == [SHAPE_CLASSES.index("torus")] * 2
    assert load_point_cloud(out / "cloud_001_torus.ply").shape == (12, 3)
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = parser.parse_args(["--checkpoint", str(tmp_path / "nope"), "--out", str(out)])
    assert cli.run(bad) == 2


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_guidance_is_a_value_error(trained, weight):
    # guidance NaN went through ClassifierFreeGuidance and surfaced only as a FloatingPointError after sampling
    model, _ = load_point_model(trained)
    with pytest.raises(ValueError, match="guidance"):
        generate_point_clouds(model, parse_labels("all", 2), 8, steps=2, guidance=weight)


def test_sample_points_cli_reports_bad_guidance_and_diverged_sampling(trained, tmp_path, capsys, monkeypatch):
    # `--guidance nan` and a diverging sampler (the shipped EGNN with --points 18 --steps 8) ended in a
    # FloatingPointError traceback with exit status 1
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    base = ["--checkpoint", str(trained), "--count", "2", "--points", "8", "--steps", "2", "--out", str(tmp_path / "o")]
    assert cli.run(parser.parse_args([*base, "--guidance", "nan"])) == 2
    assert "guidance" in capsys.readouterr().err
    import molediff.pointcloud.sample as sample_module

    def diverge(*args, **kwargs):
        raise FloatingPointError("sampling produced non-finite coordinates")

    monkeypatch.setattr(sample_module, "generate_point_clouds", diverge)
    assert cli.run(parser.parse_args(base)) == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "--steps" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_sample_points_cli_out_is_a_file(trained, tmp_path, capsys):
    # `--out some_file` sampled first, then died with a FileExistsError / NotADirectoryError traceback
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        args = parser.parse_args(["--checkpoint", str(trained), "--count", "1", "--points", "8", "--steps", "2",
                                  "--out", str(out)])
        assert cli.run(args) == 2
        assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[1, 2]", '{"config": [1]}', '"model"'])
def test_a_model_json_that_is_not_an_object_is_a_model_load_error(tmp_path, text):
    # valid JSON of the wrong kind crashed `molediff sample-points` with an AttributeError traceback
    import shutil

    shutil.copy(SHIPPED / "pointcloud_pointnet.safetensors", tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(ModelLoadError, match="m.json"):
        load_point_model(tmp_path / "m.json")
