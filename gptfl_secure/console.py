"""How a command line program was started, for its usage line and the commands it prints: by
its console script (pyproject's ``[project.scripts]``) or as ``python -m``."""

from __future__ import annotations

import sys
from pathlib import Path


def program(script: str, module: str) -> str:
    """``script`` when this process was started as the console script of that name, else
    ``python -m module``."""
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"
