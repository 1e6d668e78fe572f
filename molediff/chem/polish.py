"""Force-field relaxed conformers polished by the diffusion model ("relax, then polish").

MMFF94 moves each torsion of a conformer into its nearest local minimum, which is where a DFT geometry
sits too, so relaxation fixes much of what a sampled (or ETKDG) conformer gets wrong about its global
arrangement. Its local geometry is MMFF94's, though: relaxing the DFT geometry itself moves it by 0.066 Å
(median, QM9) through bond lengths, angles and ring puckers. The diffusion model learned the local geometry
of DFT structures, and at low noise levels it is precise (denoising the DFT geometry from σ = 0.1 Å lands
within about 0.04 Å of it; benchmarks/RESULTS.md, "Where the remaining error sits"). :class:`PolishedSampler`
therefore relaxes each conformer with MMFF94, raises it to a small noise level ``sigma_start`` (0.1 Å:
too little to turn a torsion) and lets the model sample a few steps down from there: MMFF94's torsions,
the model's bonds and angles. The polish runs without the stereo guidance (``DEFAULT_POLISH_GUIDANCE``): from
0.1 Å no stereo centre turns, and the guidance's bond and angle windows are RDKit's, not the DFT geometries'.
The noise level, the steps and the guidance were chosen on QM9 validation (``benchmarks/polish.py``; model
card, "Relax, then polish").

The result is not a force-field minimum (the polished conformers carry no energy), and polishing needs a
diffusion model that accepts starting geometries (``init_conformers``). ``molediff conformers --polish``
drives it through the product path (stereo repair, validity checks, re-sampling) like any sampler; it
composes with ``--start etkdg`` / ``--start mixed``, whose conformers are then what gets relaxed.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.errors import RelaxationError
from molediff.chem.relax import mmff_relaxed_coordinates
from molediff.chem.sampler_protocol import ModelWrapper, notes_without_mmff94

__all__ = ["PolishedSampler", "polish_conformers", "polish_seed", "broken_by_relaxation", "DEFAULT_POLISH_SIGMA",
           "DEFAULT_POLISH_STEPS", "DEFAULT_POLISH_GUIDANCE"]

#: noise level (Å) relaxed conformers are raised to before the model samples down, chosen on QM9 validation
DEFAULT_POLISH_SIGMA = 0.1
#: sampler steps from ``DEFAULT_POLISH_SIGMA`` down
DEFAULT_POLISH_STEPS = 4
#: the stereo guidance during the polish (``stereo_guidance`` of ``ConformerModel.sample``): off, chosen on QM9
#: validation. From 0.1 Å no stereo centre turns, and the guidance's bond-length and angle windows are RDKit's,
#: not the DFT geometries' that the model learned.
DEFAULT_POLISH_GUIDANCE = False


def polish_seed(seed: int) -> int:
    """The seed of the polish of a :meth:`PolishedSampler.sample` call with ``seed`` (its base sampler gets
    ``seed`` itself), so that the two stages draw independent noise and an evaluation can redo either."""
    return int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0] & 0x7FFFFFFF)


def polish_conformers(model: Any, mols: Sequence[Chem.Mol], coords: Sequence[np.ndarray], *,
                      sigma_start: float = DEFAULT_POLISH_SIGMA, steps: int = DEFAULT_POLISH_STEPS,
                      seed: int | None = None, device: str | torch.device | None = None,
                      stereo_guidance: bool | dict[str, Any] = DEFAULT_POLISH_GUIDANCE,
                      **model_options: Any) -> list[np.ndarray]:
    """Conformers redrawn by ``model`` from each one raised to noise level ``sigma_start``.

    Parameters
    ----------
    model : ConformerModel
        A diffusion model whose ``sample`` accepts ``init_conformers`` and ``sigma_start``.
    mols : sequence of Chem.Mol
        Molecules with explicit hydrogens.
    coords : sequence of numpy.ndarray
        One ``[K_i, N_i, 3]`` array per molecule (Å, RDKit atom order), e.g. MMFF94-relaxed conformers;
        may hold non-finite conformers.
    sigma_start, steps
        Noise level (Å) and the model's default sampler's steps from there down.
    seed, device
        Random seed and torch device of the model's call.
    stereo_guidance : bool or dict
        The model's stereo guidance during the polish (default ``DEFAULT_POLISH_GUIDANCE``, off).
    **model_options
        Passed to ``model.sample`` (e.g. ``precision``).

    Returns
    -------
    list of numpy.ndarray
        ``[K_i, N_i, 3]`` float64 per molecule: conformer ``k`` is polished from the ``k``-th finite input
        conformer (the finite ones taken in turn where some are not finite); a molecule with no finite input
        conformer keeps its input.
    """
    out = [np.array(c, dtype=np.float64, copy=True) for c in coords]
    if len(out) != len(mols):
        raise ValueError(f"coords: {len(out)} entries for {len(mols)} molecules")
    finite = [c[np.isfinite(c).all(axis=(1, 2))] if len(c) else c for c in out]
    todo = [i for i, c in enumerate(finite) if len(c)]
    by_count: dict[int, list[int]] = {}
    for i in todo:  # one call per number of conformers, so that each molecule keeps its own K_i
        by_count.setdefault(len(out[i]), []).append(i)
    for count, members in by_count.items():
        polished = model.sample([mols[i] for i in members], count, init_conformers=[finite[i] for i in members],
                                sigma_start=float(sigma_start), steps=int(steps), seed=seed, device=device,
                                stereo_guidance=stereo_guidance, **model_options)
        for i, c in zip(members, polished):
            out[i] = np.asarray(c, dtype=np.float64)
    return out


def broken_by_relaxation(mol: Chem.Mol, drawn: np.ndarray, relaxed: np.ndarray) -> np.ndarray:
    """Which conformers passed the validity checks (stereo included) as drawn and fail them relaxed.

    MMFF94 can carry a strained cage over into another configuration (QM9's oxa-bridged cages, e.g.
    ``C1O[C@H]2[C@@H]3C[C@]24OC[C@@]134``: every relaxed sample had the wrong stereo); such conformers
    are better left as drawn than polished from a broken start.

    Returns
    -------
    numpy.ndarray
        ``[K]`` bool.
    """
    from molediff.chem.validity import ValidityChecker

    out = np.zeros(len(drawn), dtype=bool)
    finite = np.isfinite(drawn).all(axis=(1, 2)) if len(drawn) else out
    if not finite.any():
        return out
    checker = ValidityChecker(mol)
    rows = np.flatnonzero(finite)
    after = np.array([r.ok for r in checker.check_many(relaxed[rows])])
    if after.all():
        return out
    before = np.array([r.ok for r in checker.check_many(drawn[rows[~after]])])
    out[rows[~after][before]] = True
    return out


def _sources(coords: np.ndarray, count: int) -> np.ndarray:
    """The input conformer each of ``count`` outputs of :func:`polish_conformers` was polished from."""
    finite = np.flatnonzero(np.isfinite(coords).all(axis=(1, 2)))
    return finite[np.arange(count) % len(finite)] if len(finite) else np.arange(count) % max(len(coords), 1)


def _accepted(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``function`` takes as keyword arguments (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


class PolishedSampler(ModelWrapper):
    """Conformers from a base sampler, relaxed with MMFF94, then polished by a diffusion model.

    Parameters
    ----------
    model : ConformerModel
        The diffusion model that polishes (and, without ``base``, draws the conformers).
    base : ConformerSampler, optional
        What draws the conformers (default: ``model`` sampling from its prior; e.g. an
        :class:`~molediff.chem.refine.EtkdgRefinedSampler` of the same model for ``--start mixed``).
    sigma_start, steps
        Noise level (Å) the relaxed conformers are raised to, and the model's sampler steps from there.
    max_iters : int
        MMFF94 iterations per conformer.
    guidance : bool or dict
        The stereo guidance of the polish (default ``DEFAULT_POLISH_GUIDANCE``, off); the base sampler's is
        set by the ``stereo_guidance`` option of :meth:`sample`.

    Notes
    -----
    A molecule MMFF94 has no parameters for is polished from its unrelaxed conformers (a small refinement).
    ``sampler`` and ``steps`` of :meth:`sample` go to the base sampler; the polish uses the model's
    default sampler with ``steps``. MMFF94 runs with as many RDKit threads as torch uses.
    """

    def __init__(self, model: Any, base: Any = None, sigma_start: float = DEFAULT_POLISH_SIGMA,
                 steps: int = DEFAULT_POLISH_STEPS, max_iters: int = 2000,
                 guidance: bool | dict[str, Any] = DEFAULT_POLISH_GUIDANCE) -> None:
        if not sigma_start > 0:
            raise ValueError(f"sigma_start must be > 0, got {sigma_start}")
        if steps < 1 or max_iters < 1:
            raise ValueError(f"steps and max_iters must be >= 1, got {steps} and {max_iters}")
        super().__init__(model)
        self.base = base if base is not None else model
        self.sigma_start, self.steps, self.max_iters = float(sigma_start), int(steps), int(max_iters)
        self.guidance = guidance

    @property
    def name(self) -> str:
        return f"{self.base.name}+mmff-polish"

    @property
    def config(self) -> Any:
        """The base sampler's config (its default steps are what ``steps`` of :meth:`sample` replaces)."""
        return getattr(self.base, "config", self.model.config)

    @property
    def start_label(self) -> str:
        """Where the conformers start (the base's), and how they are finished, as recorded in the output."""
        guided = "" if self.guidance is False else ", guided"
        return (f"{getattr(self.base, 'start_label', 'prior')}; relaxed with MMFF94, polished from sigma "
                f"{self.sigma_start:g} ({self.steps} steps{guided})")

    def warnings_for(self, mol: Chem.Mol) -> list[str]:
        """What :attr:`start_label` misstates for ``mol`` (the base sampler's notes, then: MMFF94 has no parameters
        for it, so it is not relaxed).

        :func:`~molediff.chem.generate.generate_conformers_batch` adds these to the molecule's warnings.
        """
        return notes_without_mmff94(self.base, mol, "MMFF94 has no parameters for this molecule: its conformers were "
                                    "polished without the MMFF94 relaxation that molediff_start names")

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int | None = None,
               device: str | torch.device | None = None, **model_options: Any) -> list[np.ndarray]:
        """``num_confs`` conformers per molecule, ``[num_confs, N_i, 3]`` float64 arrays (Å); see
        :meth:`sample_with_draws`."""
        return self.sample_with_draws(mols, num_confs, sampler=sampler, steps=steps, seed=seed, device=device,
                                      **model_options)[0]

    def sample_with_draws(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
                          steps: int | None = None, seed: int | None = None,
                          device: str | torch.device | None = None, **model_options: Any
                          ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(conformers, draws)``: per molecule ``num_confs`` conformers, ``[num_confs, N_i, 3]`` float64 (Å),
        and ``[num_confs]`` the base sampler's draw index of the conformer each was polished from (the base's own
        ``sample_with_draws`` indices where it reports them, e.g. a ranked base's).

        Non-finite conformers of the base sampler are left out of the relaxation and replaced by polished
        copies of the molecule's finite ones; a molecule with none keeps the base's output (the caller
        re-samples it). A conformer that passed the validity checks as drawn and fails them after the
        relaxation (:func:`broken_by_relaxation`) comes back as drawn. ``model_options`` go to the base sampler
        where it takes them (e.g. ``precision``, ``stereo_guidance``; ETKDG takes none) and, all but
        ``stereo_guidance`` (the polish has its own, ``guidance``), to the polish.
        """
        seed = int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        base_options = dict(sampler=sampler, steps=steps, seed=seed, device=device,
                            **_accepted(self.base.sample, model_options))
        with_draws = getattr(self.base, "sample_with_draws", None)
        if with_draws is not None:
            drawn, base_draws = with_draws(mols, num_confs, **base_options)
        else:
            drawn = self.base.sample(mols, num_confs, **base_options)
            base_draws = [np.arange(num_confs)] * len(drawn)
        drawn = [np.asarray(c, dtype=np.float64) for c in drawn]
        relaxed, broken = [], []
        for mol, coords in zip(mols, drawn):
            try:
                done = mmff_relaxed_coordinates(mol, coords, max_iters=self.max_iters,
                                                num_threads=max(1, torch.get_num_threads()))
            except RelaxationError:
                done = coords
            relaxed.append(done)
            broken.append(broken_by_relaxation(mol, coords, done))
        polish_options = {k: v for k, v in model_options.items() if k != "stereo_guidance"}
        polished = polish_conformers(self.model, mols, relaxed, sigma_start=self.sigma_start, steps=self.steps,
                                     seed=polish_seed(seed), device=device, stereo_guidance=self.guidance,
                                     **polish_options)
        draws = []
        for coords, out, spoilt, index in zip(drawn, polished, broken, base_draws):
            source = _sources(coords, len(out))
            if spoilt.any():  # those conformers come back as drawn, unrelaxed and unpolished
                keep = spoilt[source]
                out[keep] = coords[source[keep]]
            draws.append(np.asarray(index, dtype=np.int64)[source])
        return polished, draws
