"""Optional parts of the install: what each extra provides, and the one error a missing extra gives.

The core install (``pip install wavesweep``) is what a head node of greedy or grid studies or an analyst needs:
the CLI, the store (SQLite), the designs, the analysis and Ray. It holds no torch. The extras add the rest, and
README command 1 installs them all (``.[all]``).
"""

from __future__ import annotations

import importlib.util

from orchestrator.errors import WavesweepError

# extra -> (what needs it, the modules it installs that code imports; `require` checks the first). qwen comes
# first: a failed `import torch` is an experiment's, and `hint` names the first extra that holds the module.
EXTRAS = {
    "qwen": ("the Qwen3.5 experiments load models with transformers, PEFT and torch",
             ("transformers", "torch", "peft", "datasets")),
    "search": ("mode waves proposes its model waves with a Gaussian process (BoTorch)", ("botorch", "gpytorch")),
    "dashboard": ("the dashboard runs on Streamlit", ("streamlit", "plotly")),
    "postgres": ("a PostgreSQL store connects through psycopg", ("psycopg",)),
}


class MissingExtra(WavesweepError):
    pass


def hint(exc: BaseException) -> str:
    """For an import that failed on a module an extra provides: where to get it, as a sentence to append."""
    missing = getattr(exc, "name", None) or ""
    for extra, (_, modules) in EXTRAS.items():
        if missing.split(".")[0] in modules:
            return f"; {missing} comes with pip install 'wavesweep[{extra}]' (or 'wavesweep[all]')"
    return ""


def require(extra: str) -> None:
    """Raise :class:`MissingExtra` naming the pip command when ``extra``'s module is not installed."""
    why, (module, *_) = EXTRAS[extra]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook that refuses the module
        found = False
    if not found:
        raise MissingExtra(f"{why}, and {module} is not installed: pip install 'wavesweep[{extra}]' "
                           "(or 'wavesweep[all]')")
