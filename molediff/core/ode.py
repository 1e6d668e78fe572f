"""torchdiffeq's ``odeint`` with a typed error when the adaptive step size collapses.

A drift that turns non-finite, or one too stiff to integrate, drives dopri5's step size to zero, and
torchdiffeq stops with a bare ``AssertionError: underflow in dt``. :func:`odeint_checked` raises a
``FloatingPointError`` saying what happened instead, the error the samplers' callers already handle for a
diverged run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["odeint_checked"]


def odeint_checked(func: Any, y0: Any, t: Any, **options: Any) -> Any:
    """``torchdiffeq.odeint(func, y0, t, **options)``; a step-size underflow is a ``FloatingPointError``.

    Parameters
    ----------
    func, y0, t, options
        As for :func:`torchdiffeq.odeint`: the drift ``func(t, y)``, the state (a tensor ``[...]`` or a tuple of
        tensors), the output times ``[T]``, and solver options (``rtol``, ``atol``, ``method``, ...).

    Returns
    -------
    The solution at every time of ``t`` (leading dimension ``T``), as torchdiffeq returns it.

    Raises
    ------
    FloatingPointError
        The adaptive solver's step size underflowed between ``t[0]`` and ``t[-1]``.
    """
    from torchdiffeq import odeint

    try:
        return odeint(func, y0, t, **options)
    except AssertionError as err:
        if "underflow in dt" not in str(err):
            raise
        method = options.get("method") or "dopri5"
        raise FloatingPointError(
            f"the {method} ODE solver's step size underflowed between {float(t[0]):g} and {float(t[-1]):g}: the "
            "model's drift became non-finite or too stiff to integrate (try a fixed-step sampler or more steps)"
        ) from err
