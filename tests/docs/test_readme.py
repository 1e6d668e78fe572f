"""The README's front door and the benchmark docs stay consistent with the repository.

CI (``.ci/run``) must install and test exactly as the README says; every benchmark script is listed in
the README; every script a doc names exists; the contents links of ``benchmarks/RESULTS.md`` resolve.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CI = ROOT / ".ci" / "run"


def _section(text: str, heading: str) -> str:
    """The text of the level-2 section titled ``heading`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README has no section '## {heading}'"
    return match.group(1)


def _bash_commands(markdown: str) -> list[str]:
    """Commands of the ```bash blocks, one per line, with ``&&`` chains split and comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            commands.extend(part.strip() for part in line.split("&&") if part.strip())
    return commands


def _github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, only letters, digits, spaces, ``-`` and ``_``; spaces to ``-``."""
    kept = "".join(ch for ch in heading.lower() if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def test_ci_installs_and_tests_exactly_as_the_quick_start_says():
    commands = _bash_commands(_section(README.read_text(), "Quick start"))
    installs = [c for c in commands if c.startswith("pip install")]
    tests = [c for c in commands if "pytest" in c]
    assert installs == ["pip install torch==2.13.0", 'pip install -e ".[data,dev]"']
    assert tests == ['python -m pytest -q -m "not slow"']
    ci_lines = [line.strip() for line in CI.read_text().splitlines()]
    for command in installs + tests:
        # CI calls the interpreter explicitly (python3 -m pip ...) and quietly
        ci_form = command.replace("pip install", "python3 -m pip install --quiet", 1).replace("python -m", "python3 -m", 1)
        assert ci_form in ci_lines, f".ci/run does not run the README's `{command}` (expected `{ci_form}`)"


def test_every_benchmark_script_is_listed_in_the_readme():
    listed = set(re.findall(r"benchmarks/(\w+)\.py", _section(README.read_text(), "Benchmarks")))
    scripts = {path.stem for path in (ROOT / "benchmarks").glob("*.py")}
    assert scripts, "no benchmark scripts found"
    assert scripts - listed == set(), f"benchmark scripts missing from the README's Benchmarks section: {sorted(scripts - listed)}"


@pytest.mark.parametrize("doc", [README, RESULTS], ids=lambda p: p.name)
def test_every_script_a_doc_names_exists(doc: Path):
    named = set(re.findall(r"\b((?:benchmarks|scripts|examples)/\w+\.(?:py|sh))\b", doc.read_text()))
    assert named, f"{doc.name} names no scripts"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert missing == [], f"{doc.name} names scripts that do not exist: {missing}"


def test_results_contents_links_resolve():
    text = RESULTS.read_text()
    anchors = {_github_anchor(h.strip()) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "RESULTS.md has no contents links"
    assert sorted(set(links) - anchors) == [], f"dangling links in RESULTS.md: {sorted(set(links) - anchors)}"


def test_github_anchor_follows_githubs_rules():
    assert _github_anchor("Sampler × NFE") == "sampler--nfe"
    assert _github_anchor("Refining ETKDG conformers (`--start etkdg`)") == "refining-etkdg-conformers---start-etkdg"
    assert _github_anchor("QM9 test split, step 67,749, first run") == "qm9-test-split-step-67749-first-run"
