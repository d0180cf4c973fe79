"""Hash of the dermflow code a stage runs, so editing it reruns that stage.

Snakemake tracks ``script:`` files only by mtime and knows nothing of the
library they call; each rule's params carry this hash instead. A module's hash
covers every dermflow module it imports, directly or not, and every module a
registry names by dotted path (``"dermflow.models.fusion:build"``), which is
imported only when a job needs it.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

PACKAGE = "dermflow"
PACKAGE_DIR = Path(__file__).resolve().parent
DOTTED = re.compile(rf"{PACKAGE}(\.\w+)+(:\w+)?")  # a module named in a string, e.g. a builder


def _find(name: str) -> Path | None:
    """Source file of a dermflow module, found on disk without importing it."""
    parts = name.split(".")[1:]
    candidate = PACKAGE_DIR.joinpath(*parts)
    for path in (candidate / "__init__.py", candidate.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _module_file(name: str) -> Path:
    path = _find(name)
    if path is None:
        raise ModuleNotFoundError(f"no module named {name!r}")
    return path


def _internal_imports(name: str, source: str) -> set[str]:
    """dermflow modules that ``name`` imports (absolute or relative) or names by dotted path."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                DOTTED.fullmatch(node.value):
            module = node.value.split(":")[0]
            if _find(module) is not None:
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            # ``from dermflow import hair`` imports a module, not a name
            for alias in node.names:
                if _find(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return found


def module_closure(*names: str) -> list[str]:
    """The given dermflow modules and every dermflow module they import, sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_internal_imports(name, _module_file(name).read_text()) - seen)
    return sorted(seen)


def code_hash(*names: str) -> str:
    """Short SHA-256 over the source of the modules and their dermflow imports."""
    digest = hashlib.sha256()
    for name in module_closure(*names):
        digest.update(name.encode())
        digest.update(_module_file(name).read_bytes())
    return digest.hexdigest()[:16]
