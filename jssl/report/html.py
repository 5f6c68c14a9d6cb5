"""The report page: plain HTML with inline CSS, no script, images beside it as PNG files."""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Sequence

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
p.note { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
.up { color: #1a7f37; } .down { color: #b3261e; }
.runs { display: grid; grid-template-columns: repeat(var(--runs), minmax(0, 1fr)); gap: 1em; }
.runs h3 { margin-top: 0.4em; font-size: 1em; }
"""


@dataclasses.dataclass
class Section:
    """One part of the page: an anchor id, a title and its HTML body."""

    id: str
    title: str
    body: str
    level: int = 2


def esc(text) -> str:
    return html.escape(str(text))


def number(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:  # NaN
        return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    return f"{v:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence], *, numeric_from: int = 1) -> str:
    """An HTML table; cells from column ``numeric_from`` on are right-aligned numbers
    (strings there are shown as given, already escaped HTML)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i >= numeric_from:
                text = cell if isinstance(cell, str) else number(cell)
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def image(src: str, alt: str, caption: str = "") -> str:
    text = f'<img src="{esc(src)}" alt="{esc(alt)}">'
    return text + (f'<p class="note">{esc(caption)}</p>' if caption else "")


def page(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections if s.level == 2)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{esc(subtitle)}</p>')
    parts.append(f"<nav>{nav}</nav>")
    for s in sections:
        parts.append(f'<section id="{esc(s.id)}">')
        parts.append(f"<h{s.level}>{esc(s.title)}</h{s.level}>")
        parts.append(s.body)
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
