"""molediff.core: the modality-agnostic diffusion core (torch, numpy, scipy, torchdiffeq only).

Modules: ``schedules`` (noise processes), ``spaces`` (where noise lives), ``noise`` (where a sampler's noise comes
from: one generator, or one stream per sample), ``denoiser`` (the contract
``D(x, σ, **cond) -> x̂0`` and all conversions), ``losses``, ``samplers``, ``guidance``, ``likelihood``,
``mixture`` (analytic Gaussian-mixture oracle), ``utils``. Nothing is imported eagerly.
"""
