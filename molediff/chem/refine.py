"""ETKDG starting geometries refined by the diffusion model (partial diffusion from a low noise level).

ETKDG places torsions and rings from knowledge-based preferences but leaves local geometry (bond
lengths, angles, ring puckers) to distance bounds; the diffusion model learned local geometry from DFT
structures. :class:`EtkdgRefinedSampler` embeds ETKDGv3 conformers, raises each to noise level
``sigma_start`` (Å) and runs the model's sampler from there down ("SDEdit"): a low ``sigma_start``
keeps ETKDG's global layout and replaces its local geometry by the model's. Molecules ETKDG cannot
embed are sampled by the model from its prior.

With ``prior_share > 0`` (``molediff conformers --start mixed``) a share of each molecule's conformers is
sampled from the prior instead and the rest refined: the two sources miss in different places (the
model's own samples on flexible molecules, where ETKDG's torsions help; the refined ones where ETKDG
places a ring or torsion wrongly), so the mixed set covers the reference more often than either
alone (model card, "Mixed starts"). The class implements
:class:`~molediff.chem.sampler_protocol.ConformerSampler`, so the product path
(:func:`molediff.chem.generate.generate_conformers_batch`: stereo repair, validity re-sampling,
relaxation, pruning) drives it like any model (``molediff conformers --start etkdg``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.sampler_protocol import EtkdgSampler, ModelWrapper

__all__ = ["EtkdgRefinedSampler", "DEFAULT_SIGMA_START", "DEFAULT_REFINE_STEPS", "DEFAULT_PRIOR_SHARE",
           "prior_count"]

#: noise level (Å) the ETKDG geometries are raised to, chosen on QM9 validation (model card)
DEFAULT_SIGMA_START = 0.6
#: sampler steps from ``DEFAULT_SIGMA_START`` down
DEFAULT_REFINE_STEPS = 10
#: share of the conformers sampled from the prior with ``--start mixed``, chosen on QM9 validation (model card)
DEFAULT_PRIOR_SHARE = 0.5


def prior_count(num_confs: int, prior_share: float) -> int:
    """How many of ``num_confs`` conformers come from the prior: ``prior_share · num_confs``, halves rounded up.

    The product is rounded to 9 decimals first, so that a half is a half in decimal (``0.7 · 45`` is
    ``31.499999999999996`` in binary floating point and gives 32, not 31).
    """
    return int(np.floor(round(float(prior_share) * num_confs, 9) + 0.5))


class EtkdgRefinedSampler(ModelWrapper):
    """ETKDGv3 conformers refined by a conformer diffusion model.

    Parameters
    ----------
    model : ConformerModel
        The diffusion model (``molediff.chem.model.ConformerModel``) that refines.
    sigma_start : float
        Noise level (Å) the ETKDG geometries are raised to before the model's sampler runs down.
    steps : int
        Default number of sampler steps from ``sigma_start`` (a ``steps`` passed to :meth:`sample` wins).
    etkdg : EtkdgSampler, optional
        The embedder of the starting geometries.
    prior_share : float
        Share of each molecule's conformers sampled from the prior with the model's default sampler and
        steps instead of refined (:func:`prior_count` of them; 0: all refined, the default;
        :data:`DEFAULT_PRIOR_SHARE` for ``--start mixed``).
    """

    def __init__(self, model: Any, sigma_start: float = DEFAULT_SIGMA_START, steps: int = DEFAULT_REFINE_STEPS,
                 etkdg: EtkdgSampler | None = None, prior_share: float = 0.0) -> None:
        if not 0 < sigma_start < float("inf"):
            raise ValueError(f"sigma_start must be > 0 and finite, got {sigma_start}")
        if not 0.0 <= prior_share < 1.0:
            raise ValueError(f"prior_share must be in [0, 1) (1 is the model alone), got {prior_share}")
        super().__init__(model)
        self.sigma_start, self.steps = float(sigma_start), int(steps)
        self.prior_share = float(prior_share)
        self.etkdg = etkdg or EtkdgSampler()

    @property
    def name(self) -> str:
        return f"{self.model.name}+{'mixed' if self.prior_share > 0 else 'etkdg'}-start"

    @property
    def start_label(self) -> str:
        """Where the conformers start, as recorded in the output (``molediff_start``)."""
        refined = f"etkdg, sigma {self.sigma_start:g}"
        if self.prior_share == 0:
            return refined
        return (f"mixed: prior share {self.prior_share:g} ({self.model.config.default_steps} steps), "
                f"rest {refined} ({self.steps} steps)")

    @property
    def config(self) -> Any:
        """The model's config with this sampler's default steps (recorded as provenance in the output)."""
        return dataclasses.replace(self.model.config, default_steps=self.steps)

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int | None = None,
               device: str | torch.device | None = None, **model_options: Any) -> list[np.ndarray]:
        """``num_confs`` conformers per molecule, ``[num_confs, N_i, 3]`` float64 arrays (Å).

        The first :func:`prior_count` conformers (none unless ``prior_share > 0``) are sampled from the
        prior, with their own seed derived from ``seed``; the others refine ETKDG embeddings in turn
        (embeddings that failed are replaced by the molecule's successful ones); a molecule with none is
        sampled from the prior throughout. Prior samples take the model's default steps (``steps`` counts
        steps from ``sigma_start`` and does not apply to them). ``model_options`` go to
        ``model.sample`` (e.g. ``stereo_guidance``, ``precision``).
        """
        seed = int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        num_prior = prior_count(num_confs, self.prior_share)
        if num_prior == 0:
            return self._refine(mols, num_confs, sampler, steps, seed, device, model_options)
        prior_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0] & 0x7FFFFFFF)
        drawn = self.model.sample(mols, num_prior, sampler=sampler, steps=None, seed=prior_seed, device=device,
                                  **model_options)
        if num_prior == num_confs:
            return [np.asarray(c, dtype=np.float64) for c in drawn]
        refined = self._refine(mols, num_confs - num_prior, sampler, steps, seed, device, model_options)
        return [np.concatenate([np.asarray(a, dtype=np.float64), b]) for a, b in zip(drawn, refined)]

    def _refine(self, mols: Sequence[Chem.Mol], num_confs: int, sampler: str | None, steps: int | None,
                seed: int, device: str | torch.device | None, model_options: dict) -> list[np.ndarray]:
        """``num_confs`` refined ETKDG conformers per molecule (prior samples where nothing embeds)."""
        starts = self.etkdg.sample(mols, num_confs, seed=seed)
        finite = [s[np.isfinite(s).all(axis=(1, 2))] for s in starts]
        embedded = [i for i, s in enumerate(finite) if len(s)]
        not_embedded = [i for i, s in enumerate(finite) if not len(s)]
        out: list[np.ndarray | None] = [None] * len(mols)
        common = {"sampler": sampler, "seed": seed, "device": device, **model_options}
        if embedded:
            refined = self.model.sample([mols[i] for i in embedded], num_confs, steps=steps or self.steps,
                                        init_conformers=[finite[i] for i in embedded],
                                        sigma_start=self.sigma_start, **common)
            for i, coords in zip(embedded, refined):
                out[i] = coords
        if not_embedded:
            sampled = self.model.sample([mols[i] for i in not_embedded], num_confs, steps=None, **common)
            for i, coords in zip(not_embedded, sampled):
                out[i] = coords
        return [np.asarray(c, dtype=np.float64) for c in out]
