"""The layering of the train-ID contract: storage sits below the plans, both on trainid."""

from __future__ import annotations

import ast
from pathlib import Path

import trainstamp
from trainstamp import trainid
from trainstamp.timing import StampStatus

PACKAGE = Path(trainstamp.__file__).parent


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, at any depth of the
    file (imports inside functions too), with relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return imported_modules(path.read_text(), package)


def is_plans(module: str) -> bool:
    return module == "trainstamp.plans" or module.startswith("trainstamp.plans.")


def test_storage_imports_nothing_from_plans():
    modules = sorted((PACKAGE / "storage").rglob("*.py"))
    assert len(modules) > 5, modules
    offenders = {str(path.relative_to(PACKAGE)): sorted(filter(is_plans, imports_of(path)))
                 for path in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_contract_imports_nothing_of_trainstamp():
    assert not [m for m in imports_of(Path(trainid.__file__)) if m.split(".")[0] == "trainstamp"]


def test_the_walk_finds_relative_and_nested_imports():
    source = ("from . import _config\n"
              "def f():\n"
              "    from ..plans import _stamp\n"
              "    import trainstamp.plans\n")
    found = imported_modules(source, "trainstamp.storage")
    assert {"trainstamp.storage._config", "trainstamp.plans._stamp"} <= found
    assert sorted(filter(is_plans, found)) == ["trainstamp.plans", "trainstamp.plans._stamp"]


def test_stamp_statuses_are_the_timeservers():
    assert [s.name for s in StampStatus] == list(trainid.STAMP_STATUSES)
    assert trainid.STATUSES == ("OK", "STALE", "INVALID", "EXACT")
    assert set(trainid.TRUSTED_STATUSES) == {"OK", "EXACT"}
