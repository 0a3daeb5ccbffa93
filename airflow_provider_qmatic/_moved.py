"""Import paths that moved when the package was split into folders by layer, kept working.

Each old module is a three-line shim calling :func:`moved`, which warns once with
:class:`DeprecationWarning`, naming the new path, and then hands out the new module itself, so
``from airflow_provider_qmatic.models import Appointment`` in an old DAG still gets the one class.
Only the paths the documentation or the example DAGs ever showed are kept; they go in 1.0.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def warn(old: str, new: str) -> None:
    """Tell the importer of ``old`` where it went."""
    warnings.warn(
        f"{old} moved to {new}; import it from there ({old} goes in airflow-provider-qmatic 1.0)",
        DeprecationWarning,
        stacklevel=3,
    )


def moved(old: str, new: str) -> ModuleType:
    """Make ``old`` an alias of the module ``new``, warning the importer of ``old``."""
    warn(old, new)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module
