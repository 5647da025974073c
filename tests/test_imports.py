"""Light imports: the package and the worker-side modules load no torch, Ray or SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["orchestrator", "orchestrator.context", "orchestrator.execution.worker",
                                    "experiments"])
def test_module_does_not_import_heavy_libraries(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'ray', 'sqlalchemy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
