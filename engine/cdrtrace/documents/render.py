"""A small, deterministic PDF page writer over fpdf2 (core fonts, Latin-1; fixed document
dates apart from the generation time printed on the page), and HTML escaping."""
from __future__ import annotations

import datetime as dt
import html

from fpdf import FPDF

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)   # the PDF's own date fields: fixed


def latin1(text: str) -> str:
    """Core PDF fonts are Latin-1: other characters are written as '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


class Page:
    """Headings, paragraphs, key-value lines, tables and blank fill-in lines."""

    def __init__(self, title: str):
        self.pdf = FPDF(format="Letter")
        self.pdf.set_creation_date(EPOCH)
        self.pdf.set_title(latin1(title))
        self.pdf.set_author("cdrtrace")
        self.pdf.set_auto_page_break(True, margin=15)
        self.pdf.add_page()
        self.html: list[str] = [f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                f"{html.escape(title)}</title><style>body{{font:14px/1.4 "
                                "sans-serif;max-width:48em;margin:2em auto}}table{{border-"
                                "collapse:collapse}}td,th{{border:1px solid #999;padding:"
                                "2px 6px}}.blank{{border-bottom:1px solid #000;display:"
                                "inline-block;width:22em}}</style></head><body>"]
        self.heading(title, size=16)

    def heading(self, text: str, size: int = 12) -> None:
        self.pdf.set_font("Helvetica", "B", size)
        self.pdf.multi_cell(0, size * 0.55, latin1(text), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)
        self.html.append(f"<h{1 if size > 14 else 2}>{html.escape(text)}</h{1 if size > 14 else 2}>")

    def paragraph(self, text: str) -> None:
        self.pdf.set_font("Helvetica", "", 10)
        self.pdf.multi_cell(0, 5, latin1(text), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)
        self.html.append(f"<p>{html.escape(text)}</p>")

    def fields(self, pairs: list[tuple[str, str]]) -> None:
        self.pdf.set_font("Helvetica", "", 10)
        for key, value in pairs:
            self.pdf.set_font("Helvetica", "B", 10)
            self.pdf.cell(55, 5, latin1(key))
            self.pdf.set_font("Helvetica", "", 10)
            self.pdf.multi_cell(0, 5, latin1(value), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)
        self.html.append("<p>" + "<br>".join(f"<b>{html.escape(k)}</b> {html.escape(v)}"
                                             for k, v in pairs) + "</p>")

    def table(self, header: list[str], rows: list[list[str]], widths: list[int]) -> None:
        self.pdf.set_font("Helvetica", "B", 9)
        for text, width in zip(header, widths, strict=True):
            self.pdf.cell(width, 6, latin1(text), border=1)
        self.pdf.ln()
        self.pdf.set_font("Helvetica", "", 9)
        for row in rows:
            for text, width in zip(row, widths, strict=True):
                self.pdf.cell(width, 6, latin1(text), border=1)
            self.pdf.ln()
        self.pdf.ln(2)
        self.html.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                         + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>"
                                                              for c in row) + "</tr>"
                                             for row in rows) + "</table>")

    def blanks(self, labels: list[str]) -> None:
        """Lines to be filled in by hand."""
        self.pdf.set_font("Helvetica", "", 10)
        for label in labels:
            self.pdf.cell(60, 9, latin1(label))
            x, y = self.pdf.get_x(), self.pdf.get_y()
            self.pdf.line(x, y + 7, x + 110, y + 7)
            self.pdf.ln(9)
        self.html.append("<p>" + "<br>".join(f"{html.escape(label)} <span class='blank'></span>"
                                             for label in labels) + "</p>")

    def pdf_bytes(self) -> bytes:
        return bytes(self.pdf.output())

    def html_text(self) -> str:
        return "".join(self.html) + "</body></html>"
