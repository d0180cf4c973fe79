"""Hash of the dermflow code a stage runs, so editing it reruns that stage and no other.

Snakemake tracks ``script:`` files only by mtime and knows nothing of the library they
call; each rule's params carry this hash instead. A module's hash covers the dermflow
modules Python loads when it is imported: its imports, direct or not, and the packages
they sit in. Modules a registry names by dotted path (``"dermflow.models.fusion:build"``)
are not followed: a job imports only the one its experiment or generator names, so the
rule passes that one (dermflow.reruns); following them all would retrain every model
when any one changes.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "dermflow"
PACKAGE_DIR = Path(__file__).resolve().parent


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


@cache
def _internal_imports(name: str, path: Path, mtime_ns: int) -> frozenset[str]:
    """dermflow modules that ``name`` imports, absolute or relative, at any depth of its
    code (an import in a function runs when the job calls it); cached per file version,
    as planning asks for one rule's hash once per job."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
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
    return frozenset(found)


def module_closure(*names: str) -> list[str]:
    """The given dermflow modules and every one importing them loads, sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        parents = [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]
        todo.extend({*_internal_imports(name, path, path.stat().st_mtime_ns), *parents} - seen)
    return sorted(seen)


def code_hash(*names: str) -> str:
    """Short SHA-256 over the source of the modules and their dermflow imports."""
    digest = hashlib.sha256()
    for name in module_closure(*names):
        digest.update(name.encode())
        digest.update(_module_file(name).read_bytes())
    return digest.hexdigest()[:16]
