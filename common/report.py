"""Readable tables, the comparison report and its PNG plots (numpy and matplotlib only)."""
from __future__ import annotations

import numbers


def fmt(value) -> str:
    """Format one cell: thousands separators for ints, shapes as (a, b), 4 significant digits for floats."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def format_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table with aligned columns: text left, numbers right."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], numbers.Number) or row[i] is None for row in rows) and rows
               for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """The same table in GitHub Markdown."""
    numeric = [bool(rows) and all(isinstance(r[i], numbers.Number) or r[i] is None for r in rows)
               for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def summary_table(spec, trace: list[tuple[str, tuple]], params: dict[str, int], buffers: int, label: str) -> str:
    """A ``model.summary()``-style table: a backend's traced shapes and parameter counts, the spec's MACs and RF."""
    rows = []
    for (name, shape), srow in zip(trace, spec.group_rows()):
        rows.append([name, shape, params.get(name, 0), srow["macs"], srow["rf"]])
    total = sum(params.values())
    body = format_table(["layer", "output shape (NCHW)", "params", "MACs", "receptive field"], rows,
                        title=f"{label}: {spec.config.describe()}")
    return (f"{body}\ntrainable params: {total:,}   batch-norm statistics (not trained): {buffers:,}   "
            f"MACs per example: {spec.macs:,}")
