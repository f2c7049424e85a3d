"""Docs that cannot drift: every command in README.md and docs/*.md names a real tool and only flags
that tool defines, and every ```python block runs.

Shell blocks (```bash, ```sh, ```console, ```shell or no language) are scanned for
``python -m tfface...`` / ``python -m tfface_align...`` and ``tfface-*`` console scripts; a tool's
flags are read from its source (its ``DEFINE_*`` calls and those of the tfface modules it imports),
plus absl's own (``--flagfile``, ``--helpfull``, ``--verbosity``...). ```python blocks run, each in a
fresh namespace, in one subprocess started in the repository root (paths in blocks are relative to it;
a block writes only under a temporary directory); ```python no-run blocks are illustrations and are skipped.
"""
from __future__ import annotations

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from typing import Iterator, NamedTuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfface", "tfface_align")
SHELL = {"", "bash", "sh", "console", "shell"}
SEPARATORS = {"|", "||", "&&", ";", "&"}


class Block(NamedTuple):
    path: str  # relative to ROOT
    line: int  # line of the first line inside the fence
    info: str  # the fence's info string: language and options
    lines: list[str]


def doc_files(root: str = ROOT) -> list[str]:
    docs = os.path.join(root, "docs")
    pages = sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md")) if os.path.isdir(docs) else []
    return [os.path.join(root, "README.md"), *pages]


def fenced_blocks(path: str, root: str = ROOT) -> Iterator[Block]:
    with open(path, encoding="utf-8") as f:
        text = f.read().splitlines()
    fence, start, info = None, 0, ""
    for number, line in enumerate(text, 1):
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, start, info = stripped[:3], number, stripped[3:].strip().lower()
        elif fence is not None and stripped.startswith(fence) and not stripped[3:].strip():
            yield Block(os.path.relpath(path, root), start + 1, info, text[start:number - 1])
            fence = None


def logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line number, text) with backslash continuations joined and a console's ``$ `` prompt removed."""
    pending, first = "", 0
    for offset, line in enumerate(block.lines):
        if not pending:
            first = block.line + offset
            line = line.strip().removeprefix("$ ")
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(tool, its arguments) for each tfface tool run on one shell line."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;")
        lexer.whitespace_split, lexer.commenters = True, "#"
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes in an illustration
        tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if os.path.basename(token).startswith("python") and tokens[i + 1:i + 2] == ["-m"] and i + 2 < len(tokens):
            tool, i = tokens[i + 2], i + 3
        elif token.startswith("tfface-"):
            tool, i = token, i + 1
        else:
            i += 1
            continue
        if not tool.startswith(("tfface-", *(f"{p}." for p in PACKAGES))) and tool not in PACKAGES:
            continue
        args = []
        while i < len(tokens) and tokens[i] not in SEPARATORS and not tokens[i].startswith((">", "<")):
            args.append(tokens[i])
            i += 1
        yield tool, args


def flag_names(args: list[str]) -> list[str]:
    """The flag names in a tool's arguments (``[--noflip]`` placeholders included; negative numbers are values)."""
    names = []
    for arg in args:
        arg = arg.strip("[]")
        if arg.startswith("-") and arg not in ("-", "--") and not re.fullmatch(r"-[\d.e+-]+", arg):
            names.append(arg.lstrip("-").split("=")[0])
    return names


@functools.lru_cache(maxsize=None)
def console_scripts() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def module_file(module: str) -> str | None:
    """The source file ``python -m module`` runs (a package runs its ``__main__``), None if none."""
    base = os.path.join(ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _parsed(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in tree.body:  # module level: what runs when the tool starts
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def defined_flags(path: str, seen: set[str] | None = None) -> set[str]:
    """Names of the absl flags defined by the module at ``path`` and the tfface modules it imports."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    tree = _parsed(path)
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("DEFINE")
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
            names.update(k.value.value for k in node.keywords if k.arg == "short_name" and isinstance(k.value, ast.Constant))
    for module in _imported_modules(tree):
        if module.split(".")[0] in PACKAGES:
            for candidate in (os.path.join(ROOT, *module.split(".")) + ".py",
                              os.path.join(ROOT, *module.split("."), "__init__.py")):
                if os.path.isfile(candidate):
                    names |= defined_flags(candidate, seen)
    return names


def passes_unknown_flags(path: str) -> bool:
    """The tool hands flags it does not define to another parser (``run_main(..., known_only=True)``,
    e.g. Beam's pipeline options)."""
    return any(isinstance(node, ast.keyword) and node.arg == "known_only" and isinstance(node.value, ast.Constant)
               and node.value.value is True for node in ast.walk(_parsed(path)))


def has_entry_point(path: str) -> bool:
    tree = _parsed(path)
    return any(isinstance(node, ast.FunctionDef) and node.name in ("run", "main") for node in tree.body)


@functools.lru_cache(maxsize=None)
def absl_flags() -> frozenset[str]:
    """The flags absl itself defines for every tool (``--flagfile``, ``--helpfull``, ``--verbosity``...)."""
    code = "from absl import app, flags, logging; print(' '.join(flags.FLAGS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return frozenset(out.stdout.split()) | {"flagfile", "undefok"}  # the two absl's parser handles itself


def check_command(tool: str, args: list[str]) -> str | None:
    """What is wrong with one documented command, None if nothing."""
    module = console_scripts().get(tool) if tool.startswith("tfface-") else tool
    if module is None:
        return f"unknown console script '{tool}' (not in pyproject.toml's [project.scripts])"
    path = module_file(module)
    if path is None or not has_entry_point(path):
        return f"'{tool}': no such tool module ({module}, with a run() or main())"
    if passes_unknown_flags(path):
        return None
    known = defined_flags(path) | absl_flags()
    unknown = [name for name in flag_names(args)
               if name not in known and not (name.startswith("no") and name[2:] in known)]
    return f"'{tool}' has no flag(s) {', '.join('--' + n for n in unknown)}" if unknown else None


def command_problems(files: list[str], root: str = ROOT) -> list[str]:
    problems = []
    for path in files:
        for block in fenced_blocks(path, root):
            if block.info.split(" ")[0] not in SHELL:
                continue
            for number, text in logical_lines(block):
                for tool, args in commands(text):
                    problem = check_command(tool, args)
                    if problem:
                        problems.append(f"{block.path}:{number}: {problem}")
    return problems


def python_blocks(files: list[str]) -> list[Block]:
    return [block for path in files for block in fenced_blocks(path)
            if block.info.split(" ")[0] in ("python", "py") and "no-run" not in block.info.split()]


RUNNER = r'''
import json, sys, traceback
failures = []
for path, line, code in json.load(sys.stdin):
    try:
        exec(compile(code, f"{path}:{line}", "exec"), {"__name__": "__docs__"})
    except BaseException:
        failures.append(f"{path}:{line}: the python block fails:\n{traceback.format_exc(limit=-3)}")
print(json.dumps(failures))
'''


def run_python_blocks(blocks: list[Block], cwd: str) -> list[str]:
    import json

    code = [(b.path, b.line, "\n" * (b.line - 1) + "\n".join(b.lines)) for b in blocks]  # tracebacks at doc lines
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(code), capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_documented_command_names_a_real_tool_and_its_flags():
    problems = command_problems(doc_files())
    assert not problems, "\n".join(problems)


def test_every_python_block_runs():
    blocks = python_blocks(doc_files())
    assert blocks, "no runnable ```python block in README.md or docs/"
    failures = run_python_blocks(blocks, ROOT)
    assert not failures, "\n".join(failures)


def test_the_checker_names_file_line_and_the_unknown_module_or_flag(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# A page", "", "```bash",
        "python -m tfface.compare MODEL a.jpg b.jpg --noalign --annotate out.jpg   # fine",
        "python -m tfface.validate_on_lfw LFW MODEL \\", "    --lfw_pairs p.txt --no_such_flag=1 | tee log",
        "tfface-facebank list --facebank bank/ && tfface-nothing --x", "python -m tfface.not_a_tool --flagfile f",
        "```", "", "```python no-run", "python -m tfface.not_a_tool", "```", "",
        "```text", "tfface-nothing", "```",
    ]))
    assert command_problems([str(page)], str(tmp_path)) == [
        "page.md:5: 'tfface.validate_on_lfw' has no flag(s) --no_such_flag",
        "page.md:7: unknown console script 'tfface-nothing' (not in pyproject.toml's [project.scripts])",
        "page.md:8: 'tfface.not_a_tool': no such tool module (tfface.not_a_tool, with a run() or main())",
    ]


@pytest.mark.parametrize("code, message", [("x = 1", None), ("raise ValueError('drifted')", "ValueError: drifted")])
def test_a_failing_python_block_is_reported_at_its_line(tmp_path, code, message):
    page = tmp_path / "page.md"
    page.write_text(f"text\n\n```python\n{code}\n```\n")
    failures = run_python_blocks(python_blocks([str(page)]), str(tmp_path))
    if message is None:
        assert failures == []
    else:
        assert len(failures) == 1 and failures[0].startswith(f"{os.path.relpath(page, ROOT)}:4:") and message in failures[0]
