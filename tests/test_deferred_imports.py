"""Function-level imports defer a heavy stack and nothing else (issue 22): every other import sits at
the top of its module, where a reader and the layer check see it. "Heavy" is decided here, in one
place: a third-party stack below, or a sourcetrace module that imports one at its top (directly or
through other sourcetrace modules), read statically from the sources."""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Stacks a light command (`--help`, `corpus validate`, `leaderboard`) must not pay for at start-up:
# torch and what sits on it, the TTS toolkits, and the big scientific packages.
HEAVY = frozenset({
    "torch", "torchaudio", "transformers", "tokenizers", "TTS", "nemo", "lightning", "pytorch_lightning", "omegaconf",
    "hydra", "matcha", "grad_tts", "espnet", "espnet2", "sklearn", "scipy", "librosa", "numba", "matplotlib",
    "submitit", "bigvgan", "vocos", "playwright",
    "nltk", "g2p_en",  # ESPnet's English front end: g2p_en downloads NLTK data when imported unguarded
    "huggingface_hub",  # reads HF_HUB_OFFLINE once, when imported: only after go_offline() (fetch lifts it itself)
})


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the installed package `sourcetrace`, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found.setdefault(name.removesuffix(".__init__"), path)
    return found


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(node: ast.AST, name: str) -> list[tuple[ast.stmt, str]]:
    """The (statement, module) pairs an import statement names; `from a import b` names a.b when
    that is a module of ours, else a."""
    if isinstance(node, ast.Import):
        return [(node, alias.name) for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = name if _modules()[name].name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".")
    return [(node, f"{base}.{a.name}" if f"{base}.{a.name}" in _modules() else base) for a in node.names]


def _top_level_imports(name: str) -> list[str]:
    tree = ast.parse(_modules()[name].read_text(encoding="utf-8"))
    out: list[str] = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.extend(module for _, module in _imports(node, name))
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])
    visit(tree.body)
    return out


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def heavy_stack(module: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The heavy stack importing `module` loads (the first found), or None for a light module."""
    if module.split(".")[0] in HEAVY:
        return module.split(".")[0]
    for own in _with_parents(module):
        if own not in _modules() or own in seen:
            continue
        for imported in _top_level_imports(own):
            stack = heavy_stack(imported, seen | {own})
            if stack:
                return stack
    return None


def _function_level_imports():
    for name, path in sorted(_modules().items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        for statement, module in _imports(node, name):
                            yield path, statement.lineno, module


def test_function_level_imports_only_defer_a_heavy_stack():
    light = [f"{path.relative_to(ROOT)}:{line}: {module}" for path, line, module in _function_level_imports()
             if heavy_stack(module) is None]
    assert not light, ("imports inside functions that defer nothing heavy: move them to the top of the module "
                       "(a lower layer's module, or a light one)\n" + "\n".join(light))


def test_the_heaviness_rule_sees_through_our_own_modules():
    assert heavy_stack("sourcetrace.generators.vits") == heavy_stack("torch") == "torch"
    assert heavy_stack("sourcetrace.core.errors") is None and heavy_stack("json") is None
    assert "sourcetrace.cli" in _modules() and "sourcetrace.attribution.extractors.ssl" in _modules()
