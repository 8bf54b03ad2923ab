"""Every test cited in proofs/ and SECURITY.md exists: the map from claims to tests cannot rot."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = re.compile(r"`(tests/[\w/]+\.py::[\w\[\]\-.]+)`")


def cited_node_ids() -> dict[str, list[str]]:
    cited: dict[str, list[str]] = {}
    for doc in sorted((ROOT / "proofs").glob("*.md")) + [ROOT / "SECURITY.md"]:
        for node in NODE.findall(doc.read_text()):
            cited.setdefault(node, []).append(doc.name)
    return cited


def collected(files: set[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *sorted(files)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    return {line.strip() for line in done.stdout.splitlines() if "::" in line}


def test_every_claim_cites_tests():
    docs = [d for d in (ROOT / "proofs").glob("*.md") if d.name != "README.md"]
    assert len(docs) >= 6
    for doc in docs:
        text = doc.read_text()
        assert "## Statement" in text and "## Argument" in text, doc.name
        assert NODE.search(text), f"{doc.name} cites no test"


def test_every_cited_test_exists():
    cited = cited_node_ids()
    nodes = collected({node.split("::")[0] for node in cited})
    bases = {n.split("[")[0] for n in nodes}
    missing = {node: docs for node, docs in cited.items()
               if node not in nodes and node not in bases and not extra_missing(node)}
    assert not missing, f"cited but not collected: {missing}"


def extra_missing(node: str) -> bool:
    """A test of the optional [flower] extra, in a run without it (``make test`` before ``make
    test-flower``): its module is skipped at import, so it is checked by name in the source; with
    the extra installed it must be collected like any other."""
    path, name = node.split("::")[0], node.split("::")[1].split("[")[0]
    if not path.startswith("tests/flower/") or importlib.util.find_spec("flwr") is not None:
        return False
    tree = ast.parse((ROOT / path).read_text())
    return any(isinstance(f, ast.FunctionDef) and f.name == name for f in tree.body)
