"""The conformer model: an EDM-preconditioned equivariant network in the zero-centre-of-mass space.

``ConformerModel`` is both the ``nn.Module`` the trainer optimises (its ``forward`` is the
denoiser ``D(x, σ, **graph) -> x̂0``) and the :class:`~molediff.chem.sampler_protocol.ConformerSampler`
the product uses (``sample(mols, num_confs, ...)``). Everything chemical happens in
:mod:`molediff.chem.featurize`; everything diffusion happens in :mod:`molediff.core`; this file only
wires the two together, so training on a machine without RDKit (on packed tensors) works too.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from molediff.core.denoiser import EDMPrecond
from molediff.core.samplers import SAMPLERS
from molediff.core.schedules import karras_sigmas
from molediff.chem.prior import PRIORS, noise_space
from molediff.core.spaces import CenteredSpace
from molediff.file_pair import PAIR_SUFFIXES, file_pair
from molediff.nn.precision import edge_precision, resolve_precision, supports_reduced_precision

if TYPE_CHECKING:  # pragma: no cover
    from rdkit import Chem

    from molediff.chem.particle_guidance import ConformerRepulsion
    from molediff.chem.stereo_guidance import GuidanceConstraints
    from molediff.core.noise import NoiseGenerator

__all__ = [
    "NETWORKS",
    "ConformerModelConfig",
    "ConformerModel",
    "load_conformer_model",
    "default_batch_atoms",
    "DEFAULT_MODEL",
]

#: network name -> "module:class"; all share the molediff network signature (CONTRIBUTING.md).
NETWORKS: dict[str, str] = {
    "egnn": "molediff.nn.egnn:EGNN",
    "tensor_field": "molediff.nn.tensor_field:TensorFieldNetwork",
    "gfn": "molediff.nn.gfn:GraphFieldNetwork",
}

#: the model shipped inside the package (``molediff/weights/<name>.safetensors`` + ``.json``).
DEFAULT_MODEL = "qm9_egnn"


@dataclass
class ConformerModelConfig:
    """Everything needed to rebuild a conformer model from its weights.

    ``sigma_data`` is the per-coordinate standard deviation of centred training geometries (Å);
    ``sigma_min``/``sigma_max``/``rho`` define the sampling grid (Karras et al. 2022, eq. 5).
    ``max_atoms`` / ``min_atoms`` are the largest and smallest training molecules (atoms with hydrogens).
    ``prior`` is the noise the model was trained and samples with, ``"centered"`` (isotropic, zero CoM) or
    ``"harmonic"`` (bond-graph Laplacian with ``prior_stiffness`` and ``prior_eps``; :mod:`molediff.chem.prior`).
    """

    network: str = "egnn"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    sigma_data: float = 1.4
    sigma_min: float = 0.002
    sigma_max: float = 10.0
    rho: float = 7.0
    elements: tuple[str, ...] = ("H", "C", "N", "O", "F")
    featurizer_version: str = "feat-v2"
    max_atoms: int = 29
    min_atoms: int = 3
    default_sampler: str = "heun"
    default_steps: int = 20
    name: str = "molediff-conformer"
    prior: str = "centered"
    prior_stiffness: float = 1.1
    prior_eps: float = 0.05

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConformerModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown conformer-model config keys {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        if "elements" in data:
            data["elements"] = tuple(data["elements"])
        if data.get("prior", "centered") not in PRIORS:
            raise ValueError(f"unknown prior {data['prior']!r}; choose one of {PRIORS}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elements"] = list(self.elements)
        return out


def build_network(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Instantiate a registered score network by name."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    module, cls = NETWORKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


class ConformerModel(nn.Module):
    """Denoiser ``D(x, σ, node_attr, edge_index, edge_attr, batch) -> x̂0`` plus a conformer sampler.

    Shapes
    ------
    x: ``[N, 3]`` atom positions of a batch of molecules (Å); sigma: ``[N]`` per atom;
    node_attr: ``[N, F]``; edge_index: ``[2, E]``; edge_attr: ``[E, F_e]``; batch: ``[N]``.
    """

    def __init__(self, config: ConformerModelConfig) -> None:
        super().__init__()
        self.config = config
        self.denoiser = EDMPrecond(build_network(config.network, config.network_kwargs), config.sigma_data)
        #: precision of the network's per-edge work when sampling: "auto" (bf16 where it is native and the
        #: network supports it, else fp32), "fp32" or "bf16" (:mod:`molediff.nn.precision`).
        self.precision = "auto"

    # --- the denoiser contract -------------------------------------------------------------
    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        return self.denoiser(x, sigma, **cond)

    # --- ConformerSampler protocol ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def elements(self) -> tuple[str, ...]:
        return self.config.elements

    @property
    def max_atoms(self) -> int:
        return self.config.max_atoms

    @property
    def min_atoms(self) -> int:
        """The fewest atoms of any training molecule (QM9: 3). On smaller ones (diatomics) the network is
        undefined: it shortened [C-]#N and [C-]#[O+] to 0.2–0.7 Å and then diverged to NaN, and
        :func:`~molediff.chem.generate.generate_conformers_batch` embeds them with ETKDGv3 instead."""
        return self.config.min_atoms

    def check_supported(self, mol: "Chem.Mol") -> None:
        """Raise :class:`~molediff.chem.errors.UnsupportedElementError` for an element not in training."""
        from molediff.chem.errors import UnsupportedElementError

        for atom in mol.GetAtoms():
            if atom.GetSymbol() not in self.config.elements:
                raise UnsupportedElementError(atom.GetSymbol(), atom.GetIdx(), self.config.elements, model=self.name)

    def noise_space(
        self, batch: Tensor, edge_index: Tensor, edge_attr: Tensor, num_graphs: int | None = None
    ) -> CenteredSpace:
        """The space (prior) this model noises and samples a batch of molecules in (:mod:`molediff.chem.prior`).

        Shapes
        ------
        batch: ``[N]``; edge_index: ``[2, E]``; edge_attr: ``[E, F_e]``.
        """
        c = self.config
        return noise_space(c.prior, batch, edge_index, edge_attr, num_graphs,
                           stiffness=c.prior_stiffness, eps=c.prior_eps)

    def sigmas(self, steps: int | None = None, device: torch.device | str | None = None) -> Tensor:
        """The descending σ grid (``steps`` levels then 0) used for sampling."""
        return karras_sigmas(
            steps or self.config.default_steps, self.config.sigma_min, self.config.sigma_max, self.config.rho,
            device=device, dtype=torch.float32,
        )

    @torch.no_grad()
    def sample_graphs(
        self,
        cond: Mapping[str, Tensor],
        *,
        sampler: str | None = None,
        steps: int | None = None,
        generator: "NoiseGenerator" = None,
        constraints: "GuidanceConstraints | None" = None,
        precision: str | None = None,
        guidance_options: Mapping[str, Any] | None = None,
        repulsion: "ConformerRepulsion | None" = None,
        init: Tensor | None = None,
        sigma_start: float | None = None,
        **sampler_kwargs: Any,
    ) -> Tensor:
        """Sample positions for a featurised batch of molecule graphs (no RDKit needed).

        Parameters
        ----------
        cond : mapping
            ``node_attr``, ``edge_index``, ``edge_attr``, ``batch`` of the batch (on the model's device).
        sampler : str
            A name in :data:`molediff.core.samplers.SAMPLERS` (default: the model's ``default_sampler``).
        generator : torch.Generator or PerSampleNoise, optional
            Where all the noise comes from (:mod:`molediff.core.noise`; :meth:`sample` gives every conformer
            its own stream).
        constraints : GuidanceConstraints, optional
            Stereo and local-geometry constraints of the batch (global atom indices); when given,
            sampling is guided toward them (:mod:`molediff.chem.stereo_guidance`).
        guidance_options : mapping, optional
            Entries that replace those of ``DEFAULT_STEREO_GUIDANCE`` for this call. ``final_iters > 0`` also
            descends the penalty that many steps of ``final_step_size`` on the finished sample.
        repulsion : ConformerRepulsion, optional
            Particle guidance between conformers of the same molecule in the batch
            (:mod:`molediff.chem.particle_guidance`); it shares the stereo guidance's iterations and step.
        precision : str, optional
            ``"auto"``, ``"fp32"`` or ``"bf16"`` for the network's per-edge work (default: ``self.precision``);
            positions and the sampler stay float32.
        init : Tensor ``[N, 3]``, optional
            Start from these positions noised to ``sigma_start`` instead of from the prior at ``sigma_max``
            (partial diffusion, "SDEdit"): the sampler runs its ``steps`` on the grid from ``sigma_start``
            down, refining the starting geometry; the smaller ``sigma_start``, the more of it is kept.
        sigma_start : float, optional
            Required with ``init``: the noise level (Å) it is raised to, ``sigma_min < sigma_start``.

        Returns
        -------
        Tensor
            ``[N, 3]`` zero-centre-of-mass positions (Å).
        """
        name = sampler or self.config.default_sampler
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
        batch = cond["batch"]
        device = batch.device
        space = self.noise_space(batch, cond["edge_index"], cond["edge_attr"])
        if (init is None) != (sigma_start is None):
            raise ValueError("init and sigma_start go together")
        if sigma_start is None:
            sig = self.sigmas(steps, device=device)
        else:
            if not self.config.sigma_min < sigma_start:
                raise ValueError(f"sigma_start must exceed sigma_min = {self.config.sigma_min}, got {sigma_start}")
            if init.shape != (batch.numel(), 3) or not bool(torch.isfinite(init).all()):
                raise ValueError(f"init must be finite with shape ({batch.numel()}, 3), got {tuple(init.shape)}")
            sig = karras_sigmas(steps or self.config.default_steps, self.config.sigma_min, float(sigma_start),
                                self.config.rho, device=device, dtype=torch.float32)
        x = space.randn((batch.numel(), 3), generator=generator, device=device, dtype=torch.float32) * sig[0]
        if init is not None:
            x = x + space.project(init.to(device=device, dtype=torch.float32))
        denoiser: Any = self
        from molediff.chem.stereo_guidance import guidance_options as resolve_guidance, guidance_penalty

        G = resolve_guidance(guidance_options)
        terms = []  # (penalty, the σ range it acts in)
        if constraints is not None and len(constraints):
            terms.append((guidance_penalty(constraints.to(device), G["margin"], G["planar_margin"],
                                           G["distance_weight"], G["chirality"], G["centre_margin"],
                                           G["hull_margin"] if G["hull"] else None, G["hull_sigma_max"]),
                          G["sigma_range"]))
        if repulsion is not None:
            terms.append((repulsion.to(device), repulsion.sigma_range))
        if terms:
            from molediff.core.guidance import PenaltyGuidance, PenaltySum, SigmaWindow

            # guide wherever any term acts; with several, each keeps its own σ range
            penalty = terms[0][0] if len(terms) == 1 else PenaltySum([SigmaWindow(p, r) for p, r in terms])
            sigma_range = (min(r[0] for _, r in terms), max(r[1] for _, r in terms))
            denoiser = PenaltyGuidance(self, penalty, sigma_range=sigma_range, iters=G["iters"],
                                       step_size=G["step_size"], max_move=G["max_move"])
        with edge_precision(self, self.resolved_precision(precision, device)):
            x = SAMPLERS[name](denoiser, x, sig, space=space, generator=generator, **sampler_kwargs, **cond)
        if G["final_iters"] and terms:
            x = space.project(denoiser.project(x, sigma_range[0], int(G["final_iters"]), G["final_step_size"]))
        return x

    def resolved_precision(self, precision: str | None = None, device: torch.device | str = "cpu") -> str:
        """The concrete precision (``"fp32"`` / ``"bf16"``) sampling on ``device`` would use."""
        precision = precision or self.precision
        if precision == "auto" and not supports_reduced_precision(self):
            return "fp32"
        return resolve_precision(precision, device)

    @torch.no_grad()
    def sample(
        self,
        mols: Sequence["Chem.Mol"],
        num_confs: int,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        max_atoms_per_batch: int | None = None,
        stereo_guidance: bool | Mapping[str, Any] = True,
        precision: str | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        particle_guidance: bool | Mapping[str, Any] = False,
        init_conformers: Sequence[np.ndarray] | None = None,
        sigma_start: float | None = None,
    ) -> list[np.ndarray]:
        """``num_confs`` conformers for each molecule (explicit H), packed into few network batches.

        ``stereo_guidance`` steers sampling toward the input's specified tetrahedral centres and E/Z bonds,
        with planar double bonds and bond lengths and angles inside RDKit's bounds
        (:mod:`molediff.chem.stereo_guidance`); False gives the network's unguided output, and a mapping
        guides with those entries replacing ``DEFAULT_STEREO_GUIDANCE``'s (e.g. ``{"iters": 40}``).
        ``precision`` is passed to :meth:`sample_graphs` (default ``self.precision``), and so are
        ``sampler_options``, the sampler's own keyword arguments (e.g. ``{"churn": 20}`` for ``heun``).
        ``particle_guidance`` (True, or a mapping replacing entries of ``DEFAULT_PARTICLE_GUIDANCE``) makes
        the conformers of each molecule repel one another while they are sampled
        (:mod:`molediff.chem.particle_guidance`); they are then no longer independent draws.
        ``max_atoms_per_batch`` bounds the atoms of one network batch (all conformers of all molecules are
        packed into as few as fit); the default, :func:`default_batch_atoms`, is 20,000 on a CPU and 200,000 on
        an accelerator; a batch that runs out of memory (``torch.OutOfMemoryError``) is retried in halves.
        ``init_conformers`` (one ``[K_i, N_i, 3]`` array per molecule, ``K_i >= 1``, RDKit atom order, e.g.
        ETKDG's) with ``sigma_start`` refines those geometries instead of sampling from the prior: conformer
        ``k`` of a molecule starts from its starting geometry ``k mod K_i`` noised to ``sigma_start``
        (:meth:`sample_graphs`).
        ``seed`` (``>= 0``) seeds the noise: conformer ``k`` of a molecule draws from its own stream, seeded from
        ``seed``, the molecule's featurised graph and ``k`` (:mod:`molediff.chem.conformer_noise`), so a molecule
        gets the same conformers alone, in any batch, in any position and with any ``max_atoms_per_batch``
        (up to the last bits of the network's batched arithmetic; particle guidance couples a molecule's
        conformers, not molecules). ``None`` draws the seed from torch's global generator (one
        ``torch.randint`` call), so ``torch.manual_seed(s)`` makes the call reproducible and the global stream is
        advanced, never reseeded.
        Returns one float64 array ``[num_confs, N_i, 3]`` (Å, RDKit atom order) per molecule.
        """
        from molediff.chem.conformer_noise import conformer_noise, graph_digest
        from molediff.chem.featurize import collate, featurize
        from molediff.chem.stereo_guidance import GuidanceConstraints, guidance_constraints, guidance_options

        if num_confs < 1:
            raise ValueError(f"num_confs must be >= 1, got {num_confs}")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        self.to(device).eval()
        if seed is None:  # draw from the global generator (advances it; torch.seed() would reseed it)
            seed = int(torch.randint(0, 2**62, ()).item())
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        graphs = [featurize(mol, elements=self.config.elements) for mol in mols]
        digests = [graph_digest(g) for g in graphs]
        overrides = dict(stereo_guidance) if isinstance(stereo_guidance, Mapping) else None
        per_mol = None
        if stereo_guidance is not False:
            g = guidance_options(overrides)
            per_mol = [guidance_constraints(mol, g["clash_factor"], g["aromatic_rings"], g["bound_slack"])
                       for mol in mols]
        repel = None
        if particle_guidance is not False and num_confs > 1:
            from molediff.chem.particle_guidance import ConformerRepulsion, particle_guidance_options, torsion_pairs

            repel = particle_guidance_options(particle_guidance if isinstance(particle_guidance, Mapping) else None)
            templates = [torsion_pairs(mol) for mol in mols]
        # one graph per (molecule, conformer); chunk by atom count to bound memory
        if init_conformers is not None:
            if len(init_conformers) != len(graphs):
                raise ValueError(f"init_conformers: {len(init_conformers)} entries for {len(graphs)} molecules")
            for m, (g, starts) in enumerate(zip(graphs, init_conformers)):
                if starts.ndim != 3 or starts.shape[0] < 1 or starts.shape[1:] != (g.z.numel(), 3):
                    raise ValueError(f"init_conformers[{m}]: expected [K >= 1, {g.z.numel()}, 3], got {starts.shape}")
        jobs = [(m, k) for m in range(len(graphs)) for k in range(num_confs)]
        out = [np.empty((num_confs, g.z.numel(), 3)) for g in graphs]
        budget = int(max_atoms_per_batch) if max_atoms_per_batch is not None else default_batch_atoms(device)
        if budget < 1:
            raise ValueError(f"max_atoms_per_batch must be >= 1, got {max_atoms_per_batch}")
        start = 0
        while start < len(jobs):
            stop, atoms = start, 0
            while stop < len(jobs) and (stop == start or atoms + graphs[jobs[stop][0]].z.numel() <= budget):
                atoms += graphs[jobs[stop][0]].z.numel()
                stop += 1
            chunk = jobs[start:stop]
            b = collate([graphs[m] for m, _ in chunk]).to(device)
            cond = {"node_attr": b.node_attr, "edge_index": b.edge_index, "edge_attr": b.edge_attr, "batch": b.batch}
            sizes = [graphs[m].z.numel() for m, _ in chunk]
            generator = conformer_noise(int(seed), [digests[m] for m, _ in chunk], [k for _, k in chunk], sizes)
            constraints = GuidanceConstraints.concat([per_mol[m] for m, _ in chunk], sizes) if per_mol else None
            repulsion = None
            if repel is not None and repel["weight"] > 0:
                repulsion = ConformerRepulsion.build(templates, [m for m, _ in chunk], sizes, **repel)
            init = None
            if init_conformers is not None:
                init = torch.cat([torch.as_tensor(init_conformers[m][k % len(init_conformers[m])], dtype=torch.float32)
                                  for m, k in chunk]).to(device)
            try:
                pos = self.sample_graphs(cond, sampler=sampler, steps=steps, generator=generator,
                                         constraints=constraints, precision=precision, guidance_options=overrides,
                                         repulsion=repulsion, init=init, sigma_start=sigma_start,
                                         **dict(sampler_options or {})).double().cpu()
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                del b, cond, constraints, repulsion, init
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                budget = max(1, atoms // 2)  # this chunk again, in halves; later chunks too
                warnings.warn(f"out of memory on {device} with {atoms} atoms per batch; retrying with {budget}",
                              RuntimeWarning, stacklevel=2)
                continue
            for (m, k), p in zip(chunk, torch.split(pos, sizes)):
                out[m][k] = p.numpy()
            start = stop
        return out

    # --- persistence (safetensors + JSON, no pickle) ----------------------------------------
    def save_pretrained(self, stem: str | Path, card: Mapping[str, Any] | None = None) -> Path:
        """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (config + model card)."""
        from molediff.training.export import export_model

        stem = Path(stem)
        return export_model(
            stem.parent, self.state_dict(), {"task": "conformer", "model": self.config.to_dict()},
            step=int((card or {}).get("step", 0)), card=card, name=stem.name,
        )


def default_batch_atoms(device: torch.device | str) -> int:
    """Atoms per network batch that :meth:`ConformerModel.sample` packs by default on ``device``.

    On 2 CPU cores larger batches gain nothing; on one H200 guided sampling of 1,000 QM9 molecules × 10 ran at
    957 conformers/s in batches of 20,000 atoms and 4,046/s in one batch of 200,000 (fp32;
    ``benchmarks/device_sampling.py``), so an accelerator gets 200,000, halved on out-of-memory.
    """
    return 20_000 if torch.device(device).type == "cpu" else 200_000


def _resolve_path(name_or_path: str | Path | None) -> Path:
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "model.json"
    description, _ = file_pair(path)
    shipped = Path(__file__).resolve().parent.parent / "weights" / f"{name_or_path}.json"
    if description.exists() and (path.suffix in PAIR_SUFFIXES or not shipped.exists()):
        return description  # a file of the pair, or a stem (a shipped name wins over a stem in the working folder)
    if shipped.exists():
        return shipped
    raise FileNotFoundError(
        f"no conformer model {str(name_or_path)!r}: expected a run folder, a model .json/.safetensors pair, "
        f"or a shipped name in molediff/weights/"
    )


def load_conformer_model(name_or_path: str | Path | None = None, device: str | torch.device | None = None) -> ConformerModel:
    """Load a trained conformer model without pickle.

    Parameters
    ----------
    name_or_path : str or Path, optional
        ``None`` for the shipped default model, a shipped name (``molediff/weights/<name>.json``),
        a training run folder, or a ``model.json`` / ``model.safetensors`` path.
    device : str or torch.device, optional
        Where to put the weights (default CPU).

    Raises
    ------
    DeviceUnavailableError
        ``device`` cannot be used on this machine (a ``ValueError``).
    FileNotFoundError
        No model of that name or path.
    ValueError
        The model description is not a conformer model (no ``config.model`` section).
    molediff.training.export.ExportError
        The JSON is unreadable, the weights are missing, truncated or do not match the size and SHA-256 in the
        JSON (the shipped models record both), or they do not fit the described network (a ``RuntimeError``).
    """
    from molediff.core.device import require_device
    from molediff.training.export import ExportError, load_exported

    target = require_device(device)  # before reading anything: a clear error, not torch's
    meta_path = _resolve_path(name_or_path)
    state, meta = load_exported(meta_path)
    model_cfg = (meta.get("config") or {}).get("model")
    if model_cfg is None:
        raise ValueError(f"{meta_path} is not a conformer model (no config.model section)")
    model = ConformerModel(ConformerModelConfig.from_dict(model_cfg))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"the weights {meta_path.with_suffix('.safetensors')} do not fit the network "
                          f"described in {meta_path.name}: {exc}") from exc
    model.card = {"step": meta.get("step"), **meta.get("card", {})}  # type: ignore[attr-defined]
    return model.to(target).eval()
