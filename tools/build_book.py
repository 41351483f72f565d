"""Export the executed notebooks to a static HTML site with an index that follows the README's map.

    python tools/build_book.py [--out book]

Each notebooks/NN_topic.ipynb becomes OUT/NN_topic.html (outputs as committed, nothing re-run);
OUT/index.html lists the README's notebook map in order, linking every notebook that exists.
"""
from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[`?([^`\]]+)`?\]\(notebooks/([^)]+\.ipynb)\)")


def map_rows(readme: str) -> list[dict]:
    """The README's notebook map: number, title cell, summary, status (in order)."""
    rows = []
    for line in readme.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"\d\d[a-z]?", cells[0]):
            number, title, summary, status = cells
            link = LINK.search(title)
            rows.append({"number": number, "title": link.group(1) if link else title,
                         "file": link.group(2) if link else None, "summary": summary, "status": status})
    return rows


def build(out: Path) -> list[Path]:
    import nbformat
    from nbconvert import HTMLExporter

    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    written = []
    for nb_path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
        target = out / nb_path.with_suffix(".html").name
        target.write_text(body, encoding="utf-8")
        written.append(target)
    rows = map_rows((ROOT / "README.md").read_text())
    items = []
    for r in rows:
        name = html.escape(r["title"])
        if r["file"] and (out / Path(r["file"]).with_suffix(".html").name).exists():
            name = f'<a href="{Path(r["file"]).with_suffix(".html").name}">{name}</a>'
        summary = html.escape(re.sub(r"[`*]", "", r["summary"]))
        items.append(f"<tr><td>{r['number']}</td><td>{name}</td><td>{summary}</td><td>{html.escape(r['status'])}</td></tr>")
    index = ("<!doctype html><html><head><meta charset='utf-8'><title>Paradigm Lab</title>"
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td{padding:4px 8px;border-bottom:1px solid #ddd}</style>"
             "</head><body><h1>Paradigm Lab</h1><p>Executed notebooks, exported from the repository.</p>"
             "<table><tr><th>#</th><th>notebook</th><th>what you measure</th><th>status</th></tr>"
             + "".join(items) + "</table></body></html>")
    (out / "index.html").write_text(index, encoding="utf-8")
    return written + [out / "index.html"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "book")
    for path in build(parser.parse_args().out):
        print(path)
