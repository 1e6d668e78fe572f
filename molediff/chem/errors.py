"""Typed errors of the conformer pipeline.

Every error about one input molecule derives from :class:`MolediffInputError`, a
:class:`ValueError` that carries the molecule (``item``: input line, ID or SMILES) and a
short machine-friendly ``reason``. A batch catches these, reports them and goes on with
the next molecule; anything else is a bug and propagates.

Examples
--------
>>> try:
...     raise InvalidSmilesError("syntax error", item="line 3 (aspirin)")
... except MolediffInputError as err:
...     print(err.item, "->", err.reason)
line 3 (aspirin) -> syntax error
"""

from __future__ import annotations

__all__ = [
    "MolediffInputError",
    "InvalidSmilesError",
    "InvalidMoleculeError",
    "EmptyInputError",
    "FeaturizationError",
    "UnsupportedElementError",
    "TooLargeMoleculeError",
    "FragmentError",
    "RadicalError",
    "StereoError",
    "NonFiniteCoordinatesError",
    "NoValidConformerError",
    "RelaxationError",
    "MissingDependencyError",
    "InputFileError",
]


class MolediffInputError(ValueError):
    """A problem with one input molecule; the batch reports it and continues.

    Parameters
    ----------
    reason : str
        What is wrong, in a few words (e.g. ``"unparsable SMILES"``).
    item : str, optional
        Which molecule: input line and ID, or the SMILES itself.
    """

    def __init__(self, reason: str, *, item: str | None = None) -> None:
        self.reason = str(reason)
        self.item = item
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.item}: {self.reason}" if self.item else self.reason

    def with_item(self, item: str) -> "MolediffInputError":
        """Attach the molecule's identity (keeps the reason) and return ``self``."""
        self.item = item
        self.args = (self._message(),)
        return self

    def add_hint(self, hint: str) -> "MolediffInputError":
        """Append what the user can do about it to the reason (keeps the item) and return ``self``."""
        self.reason = f"{self.reason}; {hint}"
        self.args = (self._message(),)
        return self

    def __reduce__(self):  # picklable across processes, keyword arguments included
        return (_rebuild, (type(self), self.reason, self.item, self.__dict__))


def _rebuild(cls, reason, item, state):
    err = cls.__new__(cls)
    MolediffInputError.__init__(err, reason, item=item)
    err.__dict__.update(state)
    return err


class InvalidSmilesError(MolediffInputError):
    """The SMILES cannot be parsed or sanitised (syntax, valence, aromaticity)."""


class InvalidMoleculeError(MolediffInputError):
    """A molecule record (e.g. an SDF block) cannot be read or is chemically invalid."""


class EmptyInputError(MolediffInputError):
    """An empty line, an empty SMILES, a molecule without atoms or an empty file."""


class FeaturizationError(MolediffInputError):
    """A molecule cannot be turned into the model's graph features."""


class UnsupportedElementError(FeaturizationError):
    """The molecule contains an element the conformer model was not trained on.

    The one class for this error in molediff (``molediff.chem.featurize`` re-exports it).

    Parameters
    ----------
    element : str
        The offending element symbol.
    atom_index : int, optional
        Index of the first atom with that element.
    supported : sequence of str, optional
        The elements the model / featuriser supports, for the message.
    name : str, optional
        Name of the molecule (used as ``item`` when ``item`` is not given).
    model : str, optional
        Name of the model that cannot handle the element.
    item : str, optional
        Which input molecule (line, ID).
    """

    def __init__(self, element: str, atom_index: int | None = None, supported=(), name: str = "",
                 *, model: str | None = None, item: str | None = None) -> None:
        self.element = element
        self.atom_index = atom_index
        self.supported = tuple(supported)
        self.model = model
        where = f" (atom {atom_index})" if atom_index is not None else ""
        by = f"model {model}" if model else "the featuriser"
        known = f"; it knows only {', '.join(self.supported)}" if self.supported else ""
        super().__init__(f"element {element}{where} is not supported by {by}{known}",
                         item=item or name or None)


class TooLargeMoleculeError(MolediffInputError):
    """The molecule has more atoms (hydrogens included) than the allowed maximum."""


class FragmentError(MolediffInputError):
    """The input has several disconnected fragments and ``fragments='fail'`` was asked."""


class RadicalError(MolediffInputError):
    """The molecule has unpaired electrons; the models are trained on closed-shell molecules."""


class StereoError(MolediffInputError):
    """No conformer reproduces the requested stereochemistry within the resampling budget."""


class NonFiniteCoordinatesError(MolediffInputError):
    """The model returned NaN or infinite coordinates for every conformer of a molecule."""


class NoValidConformerError(MolediffInputError):
    """No conformer passed the validity checks within the resampling budget."""


class RelaxationError(MolediffInputError):
    """The force field cannot be set up for this molecule (e.g. missing MMFF94 parameters)."""


class MissingDependencyError(ImportError):
    """An optional dependency is needed; the message says which extra to install."""


class InputFileError(ValueError):
    """The input file as a whole cannot be read: a CSV without the named or any SMILES column, a missing ID column.

    Not a per-molecule problem (those are :class:`MolediffInputError`): nothing in the file can be processed,
    so ``molediff conformers`` stops with a usage error before writing anything.
    """
