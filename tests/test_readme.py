"""The README, docs/*.md and CONTRIBUTING.md stay true: every command, flag, make target, Python import and
relative link they show exists, CI calls the README's test command, and the README links every docs page."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
         for path in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]}
README = PAGES["README.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
FLAG = re.compile(r"(?<![\w=-])--([a-z][a-z0-9-]*)")
COMMAND = re.compile(r"(?:^|\s)(?:dpo-eval|-m dpo_eval\.cli) ([a-z]+)\b")
# Flags of other programs that the docs name in prose, and the program (None: vLLM's server, via --vllm-arg).
FOREIGN_FLAGS = {"gpu-memory-utilization": None, "served-model-name": None, "tiny": "benchmarks/gpu_check.py",
                 "masked": "benchmarks/rerank_bench.py"}


def command_flags() -> dict[str, set[str]]:
    """Every dpo-eval command -> its option names without the dashes (plus help)."""
    from dpo_eval.cli import main

    return {name: {"help"} | {opt[2:] for param in command.params
                              for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
                              if opt.startswith("--")}
            for name, command in main.commands.items()}


def code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks, a backslash continuation joined to its line, comments cut."""
    joined = "\n".join(FENCE.findall(text)).replace("\\\n", " ")
    return [re.split(r"(?:^|\s)#\s", line, maxsplit=1)[0] for line in joined.splitlines()]


def inline_spans(text: str) -> list[str]:
    """The inline code spans outside fenced blocks."""
    return INLINE.findall(FENCE.sub("", text))


def shown_invocations(text: str) -> list[tuple[str, str]]:
    """(command, rest of the invocation) for each `dpo-eval CMD ...` (or `-m dpo_eval.cli CMD ...`) in a code
    block or an inline code span, and for inline spans such as `report --thresholds` naming a command."""
    commands, spans = set(command_flags()), inline_spans(text)
    found = []
    for snippet in [*code_lines(text), *spans]:
        for match in COMMAND.finditer(snippet):
            rest = snippet[match.end():]
            found.append((match.group(1), re.split(r"\s(?:\||&&|;)\s", rest)[0].strip()))
    for span in spans:
        first, _, rest = span.partition(" ")
        if first in commands and rest.startswith("--"):
            found.append((first, rest))
    return found


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_command_and_flag_shown_exists(page):
    flags = command_flags()
    text = PAGES[page]
    invocations = shown_invocations(text)
    unknown = [command for command, _ in invocations if command not in flags]
    assert not unknown, f"{page}: no dpo-eval command {unknown}"
    wrong = [(command, flag) for command, rest in invocations for flag in FLAG.findall(rest)
             if flag not in flags[command]]
    assert not wrong, f"{page}: flags the commands do not have: {wrong}"
    # A bare `--flag` in prose may be any command's (docs/score.md lists the flags that take a model).
    every_flag = set().union(*flags.values(), FOREIGN_FLAGS)
    bare = [flag for span in inline_spans(text) if span.startswith("--") for flag in FLAG.findall(span)
            if flag not in every_flag]
    assert not bare, f"{page}: flags in prose that no command has: {bare}"


def test_foreign_flags_exist_in_their_programs():
    for flag, program in FOREIGN_FLAGS.items():
        assert program is None or f'"--{flag}"' in (ROOT / program).read_text(), (flag, program)


def test_invocations_are_found_with_their_flags():
    text = ("```bash\ndpo-eval score --policy p \\\n  --ref r   # --not-a-flag\ntorchrun -m dpo_eval.cli train x"
            " --set a=1\n```\nRun `dpo-eval gate --junit x` or `report --thresholds`; `--beta` alone.")
    assert shown_invocations(text) == [("score", "--policy p    --ref r"), ("train", "x --set a=1"),
                                       ("gate", "--junit x"), ("report", "--thresholds")]


def test_make_targets_exist_and_ci_runs_make_test():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    pattern = re.compile(r"(?:^|`|\$ )make ([a-z][a-z-]*)", re.M)
    assert {"demo", "test"} <= set(pattern.findall(README))
    for page, text in PAGES.items():
        shown = set(pattern.findall(text)) | {t for line in code_lines(text) for t in pattern.findall(line.strip())}
        assert shown <= targets, f"{page}: make targets that do not exist: {shown - targets}"
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_python_imports_resolve():
    imports = [(page, line) for page, text in PAGES.items() for block in re.findall(r"```python\n(.*?)```", text, re.S)
               for line in block.splitlines() if line.startswith("from dpo_eval")]
    assert imports
    for page, line in imports:
        module, names = re.match(r"from (\S+) import (.+?)(?:\s+#.*)?$", line).groups()
        loaded = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(loaded, name), f"{page}: {module} has no {name}"


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but - and _ dropped, spaces to -,
    a repeated anchor numbered -1, -2, ..."""
    anchors: set[str] = set()
    is_fenced = False
    for fence, heading in re.findall(r"^(```)|^#+ (.+)$", text, re.M):
        is_fenced ^= bool(fence)
        if fence or is_fenced:
            continue
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = base, 0
        while anchor in anchors:
            n += 1
            anchor = f"{base}-{n}"
        anchors.add(anchor)
    return anchors


def test_heading_anchors_follow_github():
    text = "# `dpo-eval score`: implicit rewards\n```bash\n# not a heading\n```\n## GPU check (`gpu_check.py`)\n## A\n## A"
    assert heading_anchors(text) == {"dpo-eval-score-implicit-rewards", "gpu-check-gpu_checkpy", "a", "a-1"}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_relative_links_resolve(page):
    text = FENCE.sub("", PAGES[page])
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (ROOT / page).parent / path if path else ROOT / page
        assert file.exists(), f"{page}: link to {target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in heading_anchors(file.read_text(encoding="utf-8")), f"{page}: link to {target}: no such heading"


def test_every_command_has_its_docs_page():
    assert {f"docs/{name}.md" for name in command_flags()} <= set(PAGES)


def test_readme_is_short_and_links_every_docs_page():
    assert len(README.splitlines()) <= 300
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)", README))
    assert linked == {page for page in PAGES if page.startswith("docs/")}
    assert "](CONTRIBUTING.md)" in README
