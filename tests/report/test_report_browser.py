"""A report looked at in a real browser: headless chromium renders the
page of a transfer under loss to a PNG, and the picture is not blank."""

from __future__ import annotations

from pathlib import Path

from .exchange import screenshot, transfer
from .pages import colour_census, decode_png


def test_chromium_draws_the_report(tmp_path: Path, chromium: str) -> None:
    run = transfer(tmp_path / "r", 60_000)
    png = tmp_path / "page.png"
    screenshot(chromium, run.page, png, 900, 1000)
    width, height, _, _ = decode_png(png.read_bytes())
    assert (width, height) == (900, 1000)
    pixels, not_white, colours = colour_census(png.read_bytes())
    # A blank page is one colour; the header band alone is dark, and the
    # cards, tables and arrows bring many more.
    assert colours > 50
    assert not_white > pixels // 10


def test_the_readme_picture_is_a_real_rendering() -> None:
    png = Path(__file__).parents[2] / "docs" / "img" / "report.png"
    pixels, not_white, colours = colour_census(png.read_bytes())
    assert colours > 50 and not_white > pixels // 20
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "docs/img/report.png" in readme
