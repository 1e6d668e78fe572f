"""Standardise one input molecule before conformer generation.

Policy (documented for users in :func:`prepare_molecule`):

* SMILES are parsed without sanitisation first, so a syntax error and a chemistry error
  (valence, aromaticity) get different, precise reasons.
* Several fragments (salts, solvates): ``fragments="largest"`` keeps the largest organic
  fragment (RDKit's ``LargestFragmentChooser``) and records what was removed;
  ``fragments="fail"`` raises :class:`FragmentError`.
* Charged molecules and zwitterions are accepted as they are (no neutralisation): the
  conformer model only needs supported elements.
* Dummy atoms (``*``, R groups, attachment points, query atoms) raise :class:`InvalidMoleculeError`.
* Radicals raise :class:`RadicalError` by default, because every shipped model is trained on
  closed-shell molecules; ``allow_radicals=True`` turns this into a warning.
* A molecule's own properties (an SDF record's data fields) are kept, except ``molediff_*`` ones,
  which an earlier run's output carries and which describe that run.
* Explicit hydrogens are added (``Chem.AddHs``); atom order of the input is kept, hydrogens
  are appended.
* ``max_atoms`` (hydrogens included) is a hard cap (:class:`TooLargeMoleculeError`);
  exceeding the model's training size only warns (see ``generate``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

from molediff.chem.errors import (
    EmptyInputError,
    FragmentError,
    InvalidMoleculeError,
    InvalidSmilesError,
    RadicalError,
    TooLargeMoleculeError,
)

__all__ = ["PreparedMolecule", "parse_smiles", "prepare_molecule", "FRAGMENT_POLICIES"]

FRAGMENT_POLICIES = ("largest", "fail")
_CXSMILES_EXTENSION = re.compile(r"\|[^|]*\|")


@dataclass
class PreparedMolecule:
    """A standardised molecule ready for the sampler.

    Attributes
    ----------
    mol : Chem.Mol
        Molecule with explicit hydrogens, stereo perceived, no conformers.
    smiles : str
        Canonical isomeric SMILES of the kept molecule (without hydrogens).
    input_smiles : str or None
        The SMILES as given, when the input was a SMILES.
    warnings : list of str
        Non-fatal remarks (removed fragments, radical allowed, ...).
    """

    mol: Chem.Mol
    smiles: str
    input_smiles: str | None = None
    warnings: list[str] = field(default_factory=list)


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse and sanitise a SMILES (or a CXSMILES: ``SMILES |extension|``), raising a typed error with the
    precise reason.

    Raises
    ------
    EmptyInputError
        Empty or whitespace-only string, or a SMILES without atoms.
    InvalidSmilesError
        Syntax error, or sanitisation failure (the RDKit message is the reason).
    """
    if smiles is None or not str(smiles).strip():
        raise EmptyInputError("empty SMILES")
    text = str(smiles).strip()
    core, _, extension = text.partition(" ") if " " in text else text.partition("\t")
    if any(ch.isspace() for ch in core) or (extension and not _CXSMILES_EXTENSION.fullmatch(extension.strip())):
        raise InvalidSmilesError(f"SMILES contains whitespace: {text!r}")
    if extension:  # CXSMILES: enhanced stereo groups, atom labels, ... parsed by RDKit
        text = f"{core} {extension.strip()}"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text, sanitize=False)
        if mol is None:
            raise InvalidSmilesError(f"unparsable SMILES {_short(text)!r} (syntax error)")
        if mol.GetNumAtoms() == 0:
            raise EmptyInputError("SMILES has no atoms")
        try:
            Chem.SanitizeMol(mol)
        except Exception as err:  # RDKit raises several sanitisation exception types
            raise InvalidSmilesError(f"invalid chemistry in {_short(text)!r}: {err}") from None
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return mol


def prepare_molecule(source: str | Chem.Mol, *, fragments: str = "largest",
                     allow_radicals: bool = False, max_atoms: int | None = None) -> PreparedMolecule:
    """Turn a SMILES or an RDKit molecule into a clean molecule with explicit hydrogens.

    Parameters
    ----------
    source : str or Chem.Mol
        A SMILES, or a molecule whose own stereochemistry (tags, or 3D when it has a 3D
        conformer and no tags) is respected.
    fragments : {"largest", "fail"}
        What to do with several disconnected fragments.
    allow_radicals : bool
        Accept molecules with unpaired electrons (with a warning) instead of failing.
    max_atoms : int, optional
        Largest number of atoms, hydrogens included.

    Returns
    -------
    PreparedMolecule

    Raises
    ------
    MolediffInputError
        A subclass naming the reason: :class:`EmptyInputError`, :class:`InvalidSmilesError`,
        :class:`InvalidMoleculeError`, :class:`FragmentError`, :class:`RadicalError`,
        :class:`TooLargeMoleculeError`.
    """
    if fragments not in FRAGMENT_POLICIES:
        raise ValueError(f"fragments must be one of {FRAGMENT_POLICIES}, got {fragments!r}")
    notes: list[str] = []
    input_smiles = None
    if isinstance(source, Chem.Mol):
        mol = _from_mol(source)
    elif isinstance(source, str):
        input_smiles = source.strip()
        mol = parse_smiles(source)
    else:
        raise TypeError(f"expected a SMILES string or an RDKit Mol, got {type(source).__name__}")

    dummies = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 0]
    if dummies:  # ETKDG (unsupported='etkdg') embedded them as atoms; the model's message said 'element *'
        raise InvalidMoleculeError(f"atom {', '.join(map(str, dummies))} is a dummy atom (*, an R group, attachment "
                                   "point or query atom), not a real one: replace it by an atom (e.g. [H] or C)")
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) > 1:
        names = sorted({Chem.MolToSmiles(f) for f in frags})
        if fragments == "fail":
            raise FragmentError(f"{len(frags)} disconnected fragments ({'.'.join(names)}); "
                                "use fragments='largest' to keep the largest")
        with rdBase.BlockLogs():
            kept = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)
        removed = [Chem.MolToSmiles(f) for f in frags]
        if Chem.MolToSmiles(kept) in removed:  # one copy only: CCO.CCO removed CCO, not nothing
            removed.remove(Chem.MolToSmiles(kept))
        notes.append(f"kept largest fragment, removed {'.'.join(removed)}")
        mol = kept

    radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    if radicals:
        msg = f"{radicals} unpaired electron(s): the model is trained on closed-shell molecules"
        if not allow_radicals:
            raise RadicalError(msg)
        notes.append(msg)

    with rdBase.BlockLogs():
        molh = Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0)
    if max_atoms is not None and molh.GetNumAtoms() > max_atoms:
        raise TooLargeMoleculeError(
            f"{molh.GetNumAtoms()} atoms (with hydrogens) exceed the cap max_atoms={max_atoms}")
    with rdBase.BlockLogs():
        smiles = Chem.MolToSmiles(Chem.RemoveHs(molh, sanitize=False))
    molh.RemoveAllConformers()
    return PreparedMolecule(mol=molh, smiles=smiles, input_smiles=input_smiles, warnings=notes)


def _from_mol(source: Chem.Mol) -> Chem.Mol:
    """Copy a user molecule, sanitise it and take its stereo (from 3D when it has no tags)."""
    if source.GetNumAtoms() == 0:
        raise EmptyInputError("molecule has no atoms")
    mol = Chem.Mol(source)
    for key in mol.GetPropNames():  # an earlier run's output as input: its provenance would mix with this run's
        if key.startswith("molediff_"):
            mol.ClearProp(key)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(mol)
        except Exception as err:
            raise InvalidMoleculeError(f"molecule fails sanitisation: {err}") from None
        has_tags = any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms()) \
            or any(b.GetStereo() != Chem.BondStereo.STEREONONE for b in mol.GetBonds())
        conf3d = [c for c in mol.GetConformers() if c.Is3D()]
        if conf3d and not has_tags:
            Chem.AssignStereochemistryFrom3D(mol, confId=conf3d[0].GetId())
        else:
            Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return mol


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
