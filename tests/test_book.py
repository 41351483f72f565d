"""make book: every notebook is exported and listed, and every link of the index resolves."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import build_book  # noqa: E402


def test_book_lists_every_notebook_and_links_resolve(tmp_path):
    build_book.build(tmp_path)
    index = (tmp_path / "index.html").read_text()
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    links = re.findall(r'href="([^"]+)"', index)
    for stem in notebooks:
        assert f"{stem}.html" in links, f"{stem} is missing from the book's index (is it linked in README's map?)"
    for link in links:
        assert (tmp_path / link).exists(), f"broken link {link}"
    rows = build_book.map_rows((ROOT / "README.md").read_text())
    assert [r["number"] for r in rows] == [stem.split("_")[0] for stem in notebooks], "README's map lists every notebook once, in order"
    pages = {stem: (tmp_path / f"{stem}.html").read_text() for stem in notebooks}
    assert all("labkit 0.1.0 | torch" in page for page in pages.values()), "outputs (the setup line) are exported"
    assert any("<img" in page for page in pages.values()), "figures are embedded"
