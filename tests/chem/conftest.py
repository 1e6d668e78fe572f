"""Fixtures for the conformer product: a controllable fake sampler, so no test needs the trained model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.sampler_protocol import EtkdgSampler, check_elements

REPO = Path(__file__).resolve().parents[2]


class FakeSampler:
    """ETKDG-backed sampler that misbehaves on purpose, like an imperfect diffusion model.

    Parameters
    ----------
    mirror : float
        Fraction of conformers returned as mirror images (x -> -x).
    scramble_double_bonds : float
        Fraction of conformers embedded with every stereo double bond flipped (E <-> Z).
    nan : float
        Fraction of conformers replaced by NaN.
    nan_always : set of str
        Canonical SMILES (without H) for which every conformer is NaN.
    raise_for : set of str
        Canonical SMILES for which ``sample`` raises (a crashing model).
    elements, max_atoms : model metadata (QM9-like by default).
    """

    name = "fake-qm9"

    def __init__(self, mirror=0.0, scramble_double_bonds=0.0, nan=0.0, nan_always=(), raise_for=(),
                 elements=("H", "C", "N", "O", "F"), max_atoms=29):
        self.mirror, self.scramble, self.nan = mirror, scramble_double_bonds, nan
        self.nan_always, self.raise_for = set(nan_always), set(raise_for)
        self.elements, self.max_atoms = tuple(elements), max_atoms
        self.calls: list[tuple[int, int]] = []  # (number of molecules, num_confs) per call
        self._etkdg = EtkdgSampler()

    def check_supported(self, mol: Chem.Mol) -> None:
        check_elements(mol, self.elements, self.name)

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler="heun", steps=None, seed=None,
               device=None) -> list[np.ndarray]:
        self.calls.append((len(mols), num_confs))
        rng = np.random.default_rng(seed)
        out = []
        for mol in mols:
            key = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))
            if key in self.raise_for:
                raise RuntimeError(f"fake model crash on {key}")
            coords = self._etkdg.sample([mol], num_confs, seed=int(rng.integers(2**31)))[0]
            flip = rng.random(num_confs) < self.scramble
            if flip.any():
                coords[flip] = self._etkdg.sample([_flip_double_bonds(mol)], int(flip.sum()),
                                                  seed=int(rng.integers(2**31)))[0]
            coords[rng.random(num_confs) < self.mirror, :, 0] *= -1.0
            coords[rng.random(num_confs) < self.nan] = np.nan
            if key in self.nan_always:
                coords[:] = np.nan
            out.append(coords)
        return out


def _flip_double_bonds(mol: Chem.Mol) -> Chem.Mol:
    """Same atoms and order, every specified double bond inverted."""
    m = Chem.Mol(mol)
    swap = {Chem.BondStereo.STEREOE: Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOZ: Chem.BondStereo.STEREOE,
            Chem.BondStereo.STEREOCIS: Chem.BondStereo.STEREOTRANS,
            Chem.BondStereo.STEREOTRANS: Chem.BondStereo.STEREOCIS}
    for b in m.GetBonds():
        if b.GetStereo() in swap:
            b.SetStereo(swap[b.GetStereo()])
    return m


@pytest.fixture
def etkdg_thread_counts(monkeypatch) -> list[int]:
    """The ``num_threads`` of every :class:`EtkdgSampler` that embeds during the test, in call order."""
    seen: list[int] = []
    original = EtkdgSampler.sample

    def record(self, *args, **kwargs):
        seen.append(self.num_threads)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EtkdgSampler, "sample", record)
    return seen


@pytest.fixture
def fake_model():
    """A well-behaved fake (pure ETKDG with QM9 metadata)."""
    return FakeSampler()


@pytest.fixture
def make_fake():
    """Factory for misbehaving fakes: ``make_fake(mirror=0.5, nan=0.1, ...)``."""
    return FakeSampler


def run_cli(*argv: str, cwd=None, timeout: float = 120, env_extra: dict | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m molediff ...`` in a subprocess with the repository on the path."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "molediff", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, input=input_text)


@pytest.fixture
def cli():
    return run_cli
