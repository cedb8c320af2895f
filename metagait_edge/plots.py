"""Figures of the reports and the demo: a headless backend, and PNGs written atomically (a reader, e.g. a
docs build, never sees half a file)."""

from __future__ import annotations

import os
from pathlib import Path

from metagait_edge.atomic import atomic_write_with


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed); matplotlib is imported here,
    not when the library is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike, dpi: int = 90) -> None:
    """Tight layout, atomic write in the format of ``path``'s suffix, then close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
