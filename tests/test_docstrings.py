"""Every module, public class and public function or method of lora_lock says what it is for (STYLE: docstrings
on public functions). Public means a name without a leading underscore, at module level or in a public class."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lora_lock"

#: ``path:qualified name`` of definitions that need no docstring of their own.
EXEMPT: frozenset[str] = frozenset()


def _definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """The module itself, its public functions and classes, and the public methods of those classes."""
    yield "<module>", tree
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield node.name, node
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and not member.name.startswith("_"):
                    yield f"{node.name}.{member.name}", member


def _undocumented() -> tuple[list[str], int]:
    missing: list[str] = []
    total = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        for name, node in _definitions(tree):
            total += 1
            assert isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            key = f"{relative}:{name}"
            if key not in EXEMPT and not (ast.get_docstring(node) or "").strip():
                missing.append(f"{key} (line {getattr(node, 'lineno', 1)})")
    return missing, total


def test_every_public_definition_has_a_docstring() -> None:
    missing, total = _undocumented()
    assert total > 400, "the walk found too few definitions: is PACKAGE the package directory?"
    assert not missing, f"{len(missing)} of {total} public definitions have no docstring:\n" + "\n".join(missing)


def test_exemptions_name_real_definitions() -> None:
    # A stale exemption would silently cover a future definition of the same name.
    known: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        known |= {f"{relative}:{name}" for name, _ in _definitions(ast.parse(path.read_text(encoding="utf-8")))}
    assert not EXEMPT - known
