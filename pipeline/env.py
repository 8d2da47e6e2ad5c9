"""Settings that come from the environment or an ignored ``.env`` file (never from tracked files).

Label Studio credentials live here: ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``.
A variable set in the environment wins over the same one in ``.env``.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

ENV_FILE = ".env"


def setting(name: str, root: Path | str = ".", default: str | None = None) -> str | None:
    """The value of ``name`` from the environment, else from ``<root>/.env``, else ``default``."""
    if name in os.environ:
        return os.environ[name]
    path = Path(root) / ENV_FILE
    if path.is_file():
        value = dotenv_values(path).get(name)
        if value is not None:
            return value
    return default
