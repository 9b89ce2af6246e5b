"""The benchmarks print their results as Markdown tables, ready to paste into benchmarks/README.md."""
from __future__ import annotations


def markdown_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others (numbers) right-aligned."""
    lines = [head, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]

    def fmt(row) -> str:
        return "| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                 for i, (cell, w) in enumerate(zip(row, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(head), rule, *(fmt(row) for row in rows)])
