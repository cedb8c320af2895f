"""Where data and caches live.

The data root is one setting: the environment variable ``METAGAIT_DATA``. Without it, data lives in
the user's cache directory, which is also where ``metagait-edge data fetch`` downloads to. Archives
are extracted once into the cache (``METAGAIT_CACHE`` or ``$XDG_CACHE_HOME/metagait-edge``), never
into the data root (which may be read-only) and never into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "METAGAIT_DATA"
CACHE_ENV = "METAGAIT_CACHE"


class DataNotFoundError(FileNotFoundError):
    """A dataset or data root is missing; the message names the path and how to get the data."""


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metagait-edge"


def cache_dir() -> Path:
    """Writable cache for extracted datasets and derived artifacts."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else user_cache_dir()


def default_data_root() -> Path:
    return user_cache_dir() / "data"


def data_root(required: bool = True) -> Path:
    """The data root from ``METAGAIT_DATA``, else the user's cache directory.

    With ``required`` a missing folder raises ``DataNotFoundError`` naming it.
    """
    env = os.environ.get(DATA_ENV)
    root = Path(env).expanduser() if env else default_data_root()
    if required and not root.is_dir():
        source = f"${DATA_ENV}" if env else "the default data root"
        raise DataNotFoundError(
            f"data root {root} (from {source}) does not exist: set {DATA_ENV} to the folder that holds "
            f"hugadb/HuGaDB_v1.tar.xz, or run `metagait-edge data fetch hugadb`"
        )
    return root
