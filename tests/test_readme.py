"""The README stays true: its make targets exist, CI calls its test command, its Python imports work."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_make_targets_exist_and_ci_runs_make_test():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    shown = set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)", README, re.M))
    assert {"demo", "test"} <= shown and shown <= targets, shown - targets
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_readme_python_imports_resolve():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    imports = [line for block in blocks for line in block.splitlines() if line.startswith("from dpo_eval")]
    assert imports
    for line in imports:
        module, names = re.match(r"from (\S+) import (.+?)(?:\s+#.*)?$", line).groups()
        loaded = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(loaded, name), f"README: {module} has no {name}"


def test_readme_cli_commands_exist():
    from dpo_eval.cli import main

    used = set(re.findall(r"^\s*dpo-eval ([a-z]+)", README, re.M))
    assert used <= set(main.commands), used - set(main.commands)
