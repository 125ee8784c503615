"""The package's layering, checked on the source: no import goes from a lower layer up to a higher
one, and no function is too long to read in one sitting.

Layers, top to bottom: commands -> runner -> engine -> (methods, posthoc, data, models) -> metrics;
`specs`, `registry`, `errors` are at the bottom and importable by all. Every import statement counts,
including the ones inside functions (a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calbench"

# package of the importing module -> packages it must never import
FORBIDDEN = {
    "calbench.runner": ("calbench.commands",),
    "calbench.engine": ("calbench.runner", "calbench.commands", "calbench.recipe"),
    "calbench.metrics": tuple(f"calbench.{p}" for p in (
        "methods", "posthoc", "engine", "runner", "commands", "report", "data", "models", "recipe")),
}
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: a deferred import inside a function and a relative import are found."""
    pkg = tmp_path / "calbench" / "engine"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from ..runner import execute\n    import calbench.commands.run\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "calbench")
    names = [m for _, m in imported_modules(pkg / "x.py")]
    assert "calbench.runner.execute" in names and "calbench.commands.run" in names


def test_no_import_goes_up_a_layer():
    offending = []
    for path in sources():
        importer = module_name(path)
        for lower, banned in FORBIDDEN.items():
            if not within(importer, lower):
                continue
            offending += [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
                          for line, module in imported_modules(path)
                          if any(within(module, b) for b in banned)]
    assert not offending, "imports up the layers:\n" + "\n".join(sorted(set(offending)))


def test_no_function_is_over_60_lines():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_checked_package_exists(package):
    """A renamed package would make its rule vacuous."""
    assert any(within(module_name(p), package) for p in sources())
