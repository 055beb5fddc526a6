"""The layering rule (CONTRIBUTING.md), read from the source: `metrics/` is pure statistics (numpy, pandas,
scipy; no torch, no file or network I/O, no import of the layers above it), `reports/` renders saved results
(no torch or transformers, nothing of the engine, judges or pipeline). The fresh-interpreter check that
importing `dpo_eval.metrics` loads no torch is tests/metrics/test_rewards.py; this one also covers imports
inside functions and the `reports/` layer."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"os", "io", "pathlib", "shutil", "subprocess", "socket", "tempfile", "urllib", "http", "glob",
              "sqlite3", "requests", "httpx"}
STDLIB = set(sys.stdlib_module_names)
RULES = {
    # layer folder: (third-party roots allowed, dpo_eval modules allowed as prefixes, stdlib roots refused)
    "metrics": ({"numpy", "pandas", "scipy"}, ("dpo_eval.metrics",), IO_MODULES),
    "reports": ({"numpy", "pandas", "matplotlib", "jsonschema"}, ("dpo_eval.metrics", "dpo_eval.reports", "dpo_eval.jsonio"),
                set()),
}


def imported_modules(source: str) -> list[str]:
    """Every module an import statement names, at any depth (relative imports as written, with dots)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def layer_violations(source: str, layer: str) -> list[str]:
    """The imports of one module of `layer` that its rule refuses."""
    third_party, own, refused_stdlib = RULES[layer]
    bad = []
    for name in imported_modules(source):
        root = name.split(".")[0]
        if name.startswith("."):
            continue  # relative: inside the layer's own package
        if root == "dpo_eval":
            if not any(name == prefix or name.startswith(prefix + ".") for prefix in own):
                bad.append(name)
        elif root in STDLIB:
            if root in refused_stdlib:
                bad.append(name)
        elif root not in third_party and root != "__future__":
            bad.append(name)
    return bad


@pytest.mark.parametrize("layer", sorted(RULES))
def test_each_layer_imports_only_what_its_rule_allows(layer: str) -> None:
    files = sorted((ROOT / layer).glob("*.py"))
    assert files, f"no modules under {layer}/"
    found = {f"{path.relative_to(ROOT)}": bad for path in files if (bad := layer_violations(path.read_text(), layer))}
    assert found == {}, f"{layer}/ imports outside its layer: {found}"


def test_the_rule_catches_each_kind_of_violation() -> None:
    source = ("import numpy as np\nfrom pathlib import Path\n"
              "def f():\n    import torch\n    from dpo_eval.engine import logprobs\n    from dpo_eval.metrics import kl\n")
    assert layer_violations(source, "metrics") == ["pathlib", "torch", "dpo_eval.engine"]
    assert layer_violations("from dpo_eval.report.assemble import x\nimport transformers\n", "reports") == [
        "dpo_eval.report.assemble", "transformers"]
    assert layer_violations("import json\nfrom dpo_eval.jsonio import write_json\nimport matplotlib\n", "reports") == []
