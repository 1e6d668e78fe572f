"""Smoke tests: each example trains for a few steps, samples, evaluates and writes its figure.

They run the scripts' ``main`` in-process with ``--quick`` (tiny sample / likelihood sizes) and check the
returned metrics are finite and the PNGs exist; they do not judge sample quality (see examples/README.md).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"molediff_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_toy2d_smoke(tmp_path, restore_threads, capsys):
    toy2d = _load("toy2d")
    rows = toy2d.main(["--dataset", "moons", "--steps", "20", "--seed", "1", "--quick", "--out", str(tmp_path)])
    assert [r["dataset"] for r in rows] == ["moons"]
    r = rows[0]
    for key in ("loss", "ed_heun", "ed_sde", "ed_floor", "ed_prior", "nll_model", "nll_gauss"):
        assert math.isfinite(r[key]), key
    assert (tmp_path / "moons.png").stat().st_size > 1000
    assert "ED heun" in capsys.readouterr().out


def test_toy2d_metrics_helpers():
    toy2d = _load("toy2d")
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    assert abs(toy2d.energy_distance(x, y)) < 0.02  # same law: 0 up to noise
    with pytest.raises(ValueError):
        toy2d.energy_distance(x[:1], y)
    assert toy2d.energy_distance(x, x + 3.0) > 1.0
    # the fitted-Gaussian NLL of 2-D standard normal data is close to log(2π) + 1 ≈ 2.838
    assert abs(toy2d.gaussian_nll(x, x) - math.log(2 * math.pi) - 1.0) < 0.15
    assert toy2d.true_nll("checkerboard", x) == pytest.approx(math.log(6.0))


@pytest.mark.slow
def test_digits_smoke(tmp_path, restore_threads):
    digits = _load("digits")
    out = digits.main(["--steps", "20", "--seed", "1", "--quick", "--out", str(tmp_path)])
    assert set(out["acc"]) == {0.0, 1.0, 2.0, 4.0}
    assert out["test_acc"] > 0.9  # the sanity classifier itself
    assert math.isfinite(out["bpd"]) and out["bpd"] > 0
    assert (tmp_path / "digits_cfg.png").stat().st_size > 1000


def test_digits_bpd_baseline_and_grid(tmp_path):
    digits = _load("digits")
    from molediff.data.digits import load_digits_split

    split = load_digits_split()
    hist = digits.histogram_bpd(split.x_train, split.x_test)
    assert 1.0 < hist < math.log2(17)  # beats the uniform code, far from zero
    imgs = torch.rand(20, 1, 8, 8) * 2 - 1
    digits.plot_grids({0.0: imgs, 1.0: imgs}, per_class=2, path=tmp_path / "g.png")
    assert (tmp_path / "g.png").exists()


def test_digits_train_and_guided_sampling():
    """Fast path through the digits example: a few training steps, then a guided grid."""
    import yaml

    digits = _load("digits")
    from molediff.data.digits import load_digits_split

    cfg = yaml.safe_load(digits.DEFAULT_CONFIG.read_text())
    cfg["network"].update(base_channels=8, emb_dim=16, num_heads=2)
    cfg["train"].update(steps=3, warmup=1, batch_size=8)
    cfg["sample"].update(per_class=1, heun_steps=2)
    split = load_digits_split()
    model, loss = digits.train(cfg, split.x_train[:32], split.y_train[:32], torch.device("cpu"), seed=0)
    assert math.isfinite(loss)
    assert not any(p.requires_grad for p in model.parameters())
    imgs, labels = digits.sample_grid(model, cfg, 2.0, torch.device("cpu"), seed=0)
    assert imgs.shape == (10, 1, 8, 8) and torch.equal(labels, torch.arange(10))
    assert imgs.min() >= -1 and imgs.max() <= 1


def test_pointcloud_example_runs_outside_the_repository_root(tmp_path, monkeypatch, restore_threads, capsys):
    # run from another folder it died with "cannot read config configs/pointcloud_pointnet.yaml" (the
    # config path was relative to the working directory, unlike toy2d.py / digits.py)
    module = _load("pointcloud_sampling")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pc"
    monkeypatch.setattr(sys, "argv", ["pointcloud_sampling.py", "--minutes", "0.005", "--points", "16",
                                      "--per-class", "2", "--out", str(out)])
    module.main()
    printed = capsys.readouterr().out
    assert "1-NNA-CD" in printed and "torus" in printed
    assert (out / "points.npz").is_file() and (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
