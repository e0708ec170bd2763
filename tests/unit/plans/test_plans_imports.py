"""The plans package stays generic: the file formats and wire clients of the subsystems
(HDF5 through h5py, the tagger server through Pyro5) are imported only by the
subsystems' own collectors, never by :mod:`trainstamp.plans`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import trainstamp.plans

PLANS = Path(trainstamp.plans.__file__).parent
FORBIDDEN = ("h5py", "Pyro5")


def _imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in ``path`` names,
    inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_plans_imports_neither_h5py_nor_pyro5():
    modules = sorted(PLANS.glob("*.py"))
    assert len(modules) > 5  # the package was found
    bad = {f"{path.name}: {name}" for path in modules for name in _imported(path)
           if name.split(".")[0] in FORBIDDEN}
    assert bad == set()


def test_plans_leaves_the_collectors_to_the_devices():
    # train_fly drives the collectors the devices make; it never builds one itself.
    bad = {f"{path.name}: {name}" for path in PLANS.glob("*.py") for name in _imported(path)
           if name.endswith("._collector")}
    assert bad == set()


@pytest.mark.parametrize("module", ["trainstamp.timing._collector",
                                    "trainstamp.detector._collector",
                                    "trainstamp.tagger._collector"])
def test_each_collector_imports_first_in_a_fresh_interpreter(module):
    # The collectors import the plans package (their base), which must not import them
    # back at module level: either order of first import works.
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
