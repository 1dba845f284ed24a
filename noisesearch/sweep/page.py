"""The HTML page (and markdown) of a sweep report: tables, embedded images (base64), image grids of the worst,
median and best samples; every piece of user text escaped."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from noisesearch.sweep.tables import label


def _html_table(lines: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in lines[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines[1:]]
    return "\n".join(out) + "\n"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _figure(out: Path, path: str, caption: str) -> str:
    if not (out / path).is_file():
        return ""
    text = html.escape(caption)
    return f"<figure>{_img((out / path).read_bytes(), caption)}<figcaption>{text}</figcaption></figure>"


def image_grids(rows: list[dict], out: Path, metric: str, budget: int, *, max_targets: int = 12) -> str:
    """Per target, the worst, median and best images with their scores.

    With ``keep_images: all``: the candidates of one search (the first configuration at ``budget``,
    lowest seed), ranked by the search verifier. Otherwise: the kept best images of every
    configuration, ranked by ``metric``.
    """
    searches: dict[int, dict] = {}
    for r in sorted(
        (r for r in rows if r.get("candidate_images") and r["budget"] == budget), key=lambda r: (label(r), r["seed"])
    ):
        searches.setdefault(r["target_index"], r)
    if searches:
        return _candidate_grids(searches, out, max_targets)
    return _best_grids(rows, out, metric, max_targets)


def _candidate_grids(searches: dict[int, dict], out: Path, max_targets: int) -> str:
    """``keep_images: all``: per target, one search's worst, median and best candidates by the search verifier."""
    parts = []
    for index in sorted(searches)[:max_targets]:
        r = searches[index]
        kept = sorted((c for c in r["candidate_images"] if c["score"] is not None), key=lambda c: c["score"])
        if not kept:
            continue
        picks = [("worst", kept[0]), ("median", kept[len(kept) // 2]), ("best", kept[-1])]
        figures = "".join(_figure(out, c["image"], f"{kind} of {len(kept)}: {c['score']:.4g}") for kind, c in picks)
        title = f"{r['target']} ({label(r)}, budget {r['budget']}, seed {r['seed']})"
        parts.append(f"<section class='grid'><h3>{html.escape(str(title))}</h3>{figures}</section>")
    return "".join(parts)


def _best_grids(rows: list[dict], out: Path, metric: str, max_targets: int) -> str:
    """Per target, the kept best images of every configuration: the worst, median and best by ``metric``."""
    by_target: dict[int, list[dict]] = {}
    for r in rows:
        if r.get("image") and r.get(metric) is not None:
            by_target.setdefault(r["target_index"], []).append(r)
    parts = []
    for index in sorted(by_target)[:max_targets]:
        group = sorted(by_target[index], key=lambda r: r[metric])
        picks = [("worst", group[0]), ("median", group[len(group) // 2]), ("best", group[-1])]
        figures = "".join(
            _figure(out, r["image"], f"{kind}: {r[metric]:.4g} - {label(r)}, budget {r['budget']}") for kind, r in picks
        )
        parts.append(f"<section class='grid'><h3>{html.escape(str(group[0]['target']))}</h3>{figures}</section>")
    return "".join(parts) or "<p>No images were kept (set <code>keep_images: true</code> in the config).</p>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{image-rendering:pixelated;max-width:100%}
figure{display:inline-block;margin:0 1em 1em 0;font-size:12px;width:160px}figure img{width:128px}"""


class Page:
    """A report being assembled: HTML sections (figures and tables) and the markdown of its tables, in order."""

    def __init__(self, name: str):
        self.sections: list[str] = []
        self.markdown = [f"# Sweep report: {name}\n"]

    def add_html(self, section: str) -> None:
        """A piece of the HTML page only (a figure, the image grids)."""
        self.sections.append(section)

    def add_table(self, title: str, lines: list[list[str]]) -> None:
        """A titled table, on the page and in the markdown."""
        self.sections.append(f"<h2>{html.escape(title)}</h2>{_html_table(lines)}")
        self.markdown += [f"## {title}\n", _markdown_table(lines)]

    def html(self, note: str) -> bytes:
        """The whole self-contained page, ``note`` (escaped) under its heading."""
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>noisesearch report</title>"
            f"<style>{STYLE}</style></head><body><h1>noisesearch sweep report</h1><p>{html.escape(note)}</p>"
            f"{''.join(self.sections)}</body></html>"
        ).encode()

    def markdown_text(self) -> bytes:
        """The tables as markdown."""
        return "\n".join(self.markdown).encode()
