from __future__ import annotations

from metagait_edge.plots import save_figure, subplots


def test_save_figure_writes_the_png_atomically_and_closes_the_figure(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    out = tmp_path / "sub" / "fig.png"
    save_figure(fig, out, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.png"]  # no temporary file left behind
    assert not plt.fignum_exists(fig.number)
