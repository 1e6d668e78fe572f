"""molediff.core: the modality-agnostic diffusion core (torch, numpy, scipy, torchdiffeq only).

Modules: ``schedules`` (noise processes), ``spaces`` (where noise lives), ``denoiser`` (the contract
``D(x, σ, **cond) -> x̂0`` and all conversions), ``losses``, ``samplers``, ``guidance``, ``likelihood``,
``mixture`` (analytic Gaussian-mixture oracle), ``utils``. Nothing is imported eagerly.
"""
