"""Which layer may import which (the torch-free metrics check is tests/metrics/test_rewards.py).

    dpo_eval/cli/   the only code that imports click; nothing else imports the CLI; importing it loads
                    neither torch nor transformers (each command imports its library function when run)
    metrics/        imports nothing of dpo_eval but dpo_eval.metrics
    reports/        imports nothing of dpo_eval but dpo_eval.reports, dpo_eval.metrics and
                    dpo_eval.jsonio (atomic writes)

and which libraries the two pure layers may use: metrics/ numpy, pandas, scipy and the standard library
without its file, process and network modules (no I/O); reports/ numpy, pandas, matplotlib, jsonschema and
the standard library (never torch or transformers).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"metrics": ("dpo_eval.metrics",), "reports": ("dpo_eval.reports", "dpo_eval.metrics", "dpo_eval.jsonio")}
IO_MODULES = {"os", "io", "pathlib", "shutil", "subprocess", "socket", "tempfile", "urllib", "http", "glob",
              "sqlite3"}
LIBRARIES = {  # layer folder: (libraries allowed besides the standard library, standard modules refused)
    "metrics": ({"numpy", "pandas", "scipy"}, IO_MODULES),
    "reports": ({"numpy", "pandas", "matplotlib", "jsonschema"}, set()),
}


def imported_modules(source: str) -> set[str]:
    """Every absolute module a source imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_violations(folder: str, allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in sorted(imported_modules(path.read_text())):
            if is_within(name, "dpo_eval") and name != "dpo_eval" and not any(is_within(name, ok) for ok in allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_imported_modules_sees_top_level_and_function_imports():
    source = "import click\nfrom dpo_eval import cli\ndef f():\n    from dpo_eval.score import score\n"
    assert {"click", "dpo_eval.cli", "dpo_eval.score"} <= imported_modules(source)


def test_layer_violations_names_a_planted_upward_import(tmp_path, monkeypatch):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "bad.py").write_text("def f():\n    from dpo_eval.engine import logprobs\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert layer_violations("metrics", ALLOWED["metrics"]) == [
        "metrics/bad.py imports dpo_eval.engine", "metrics/bad.py imports dpo_eval.engine.logprobs"]


def test_metrics_and_reports_import_no_layer_above_them():
    for folder, allowed in ALLOWED.items():
        assert layer_violations(folder, allowed) == []


def test_only_the_cli_package_imports_click_and_nothing_imports_the_cli():
    bad = []
    for folder in ("dpo_eval", "metrics", "reports"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "dpo_eval" / "cli"):
                continue
            names = imported_modules(path.read_text())
            bad += [f"{path.relative_to(ROOT)} imports {n}" for n in sorted(names)
                    if is_within(n, "click") or is_within(n, "dpo_eval.cli")]
    assert bad == []


def test_importing_the_cli_loads_no_torch():
    code = ("import sys, dpo_eval.cli\n"
            "print(','.join(name for name in ('torch', 'transformers') if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import dpo_eval.cli loaded {out.stdout.strip()}"


def library_violations(source: str, layer: str) -> list[str]:
    """The top-level packages a module of `layer` imports that its rule refuses (dpo_eval's own: above)."""
    libraries, refused = LIBRARIES[layer]
    roots = sorted({name.split(".")[0] for name in imported_modules(source)} - {"dpo_eval", "__future__"})
    return [root for root in roots
            if (root in refused) or (root not in sys.stdlib_module_names and root not in libraries)]


def test_the_pure_layers_use_only_their_libraries():
    found = {str(path.relative_to(ROOT)): bad for layer in LIBRARIES for path in sorted((ROOT / layer).rglob("*.py"))
             if (bad := library_violations(path.read_text(), layer))}
    assert found == {}


def test_library_violations_names_torch_io_and_unknown_packages():
    source = "import numpy as np\nfrom pathlib import Path\ndef f():\n    import torch\n    import json\n"
    assert library_violations(source, "metrics") == ["pathlib", "torch"]
    assert library_violations("import transformers\nimport matplotlib.pyplot\nimport os\n", "reports") == [
        "transformers"]
