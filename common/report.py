"""Readable tables, the comparison report and its PNG plots (numpy and matplotlib only)."""

from __future__ import annotations

import itertools
import json
import numbers
import os
import statistics
from pathlib import Path

from .arch import config_from_dict
from .files import atomic_write
from .spec import spec


def fmt(value) -> str:
    """Format one cell: thousands separators for ints, shapes as (a, b), 4 significant digits for floats."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def format_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table with aligned columns: text left, numbers right."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], numbers.Number) or row[i] is None for row in rows) and rows for i in range(len(headers))
    ]

    def line(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """The same table in GitHub Markdown."""
    numeric = [
        bool(rows) and all(isinstance(r[i], numbers.Number) or r[i] is None for r in rows) for i in range(len(headers))
    ]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def summary_table(spec, trace: list[tuple[str, tuple]], params: dict[str, int], buffers: int, label: str) -> str:
    """A ``model.summary()``-style table: a backend's traced shapes and parameter counts, the spec's MACs and RF."""
    rows = []
    for (name, shape), srow in zip(trace, spec.group_rows(), strict=True):
        rows.append([name, shape, params.get(name, 0), srow["macs"], srow["rf"]])
    total = sum(params.values())
    body = format_table(
        ["layer", "output shape (NCHW)", "params", "MACs", "receptive field"],
        rows,
        title=f"{label}: {spec.config.describe()}",
    )
    return (
        f"{body}\ntrainable params: {total:,}   batch-norm statistics (not trained): {buffers:,}   "
        f"MACs per example: {spec.macs:,}"
    )


def compare_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    """One row per backend of a `vgg compare` run, with the spec's figures beside the measured ones."""

    headers = [
        "backend",
        "device",
        "workers",
        "params",
        "spec params",
        "MACs/example",
        "median epoch examples/s",
        "train acc",
        "test acc",
        "wall s",
        "compiles",
    ]
    rows = []
    for r in records:
        s = spec(config_from_dict(r["config"]))
        epochs = r["history"]["epochs"]
        last = epochs[-1] if epochs else {}
        speeds = [e["examples_per_sec"] for e in epochs]  # the median: a busy moment of one epoch does not count
        rows.append(
            [
                r["framework"],
                r["history"].get("device"),
                r.get("workers", 1),  # runs saved before the field was written ran in one process
                r["params"],
                s.params,
                s.macs,
                statistics.median(speeds) if speeds else None,
                last.get("train_acc"),
                last.get("test_acc"),
                r["wall_seconds"],
                r["history"].get("compiles", 0) if r.get("compile") else "off",
            ]
        )
    return headers, rows


def wall_times(epochs: list[dict]) -> list[float]:
    """The run's wall time at the end of each epoch; for a record written before it was kept, the sum of the
    epochs' training seconds (evaluation left out)."""
    if all(e.get("wall_seconds") is not None for e in epochs):
        return [e["wall_seconds"] for e in epochs]
    return list(itertools.accumulate(e["seconds"] for e in epochs))


def plot_curves(records: list[dict], path) -> None:
    """The book's training plot, one line style per backend: loss, train acc and test acc per epoch (top row)
    and against the run's wall time (bottom row), where a faster framework's curve ends further left."""
    import matplotlib  # deferred: a heavy library, loaded only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2))
    keys = ("loss", "train_acc", "test_acc")
    for r in records:
        epochs = r["history"]["epochs"]
        for row, x in zip(axes, ([e["epoch"] for e in epochs], wall_times(epochs)), strict=True):
            for ax, key in zip(row, keys, strict=True):
                ax.plot(x, [e[key] for e in epochs], marker="o", label=r["framework"])
    for row, xlabel in zip(axes, ("epoch", "wall time (s)"), strict=True):
        for ax, title in zip(row, ("training loss", "train accuracy", "test accuracy"), strict=True):
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if xlabel == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            ax.grid(alpha=0.3)
            ax.legend()
    if records:
        fig.suptitle(_run_title(records[0]))
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _run_title(r: dict) -> str:
    schedule = "" if r.get("lr_schedule", "constant") == "constant" else f" ({r['lr_schedule']})"
    return (
        f"{config_from_dict(r['config']).describe()}; {r['optimizer']} lr {r['lr']:g}{schedule}, "
        f"batch {r['batch_size']}, {r['train_examples']:,} train / {r['test_examples']:,} test examples"
    )


def save_figure(fig, path, dpi: int, overwrite: bool = True) -> None:
    """Write a matplotlib figure atomically, in the format its name gives (.png, .pdf, .svg); close it. Without
    ``overwrite``, a file at ``path`` is kept (:func:`common.files.atomic_write`)."""
    import matplotlib.pyplot as plt  # deferred: a heavy library, loaded only where a plot is drawn

    fmt = os.path.splitext(str(path))[1].lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=fmt), overwrite=overwrite)
    finally:
        plt.close(fig)


def write_compare_report(out, records: list[dict]) -> dict:
    """Write report.md, curves.png and results.json into ``out``; return their paths and the text table."""

    out = Path(out)
    headers, rows = compare_rows(records)
    plot_curves(records, out / "curves.png")
    test_acc = headers.index("test acc")
    accs = [r[test_acc] for r in rows if r[test_acc] is not None]
    spread = max(accs) - min(accs) if accs else 0.0
    arch = records[0]["config"]["arch"] if records else "VGG"
    md = [
        f"# {'AlexNet' if arch == 'alexnet' else 'VGG'} on Fashion-MNIST in {len(records)} frameworks",
        "",
        _run_title(records[0]) if records else "",
        "",
        markdown_table(headers, rows),
        "",
        f"Spread of final test accuracy across backends: {spread:.4f}.",
        "",
        "All backends start from the same weights (seeded Xavier-uniform from `common.weights`) and see the "
        "same batch order (`common.data`); differences come from the frameworks' numerics and dropout masks.",
        "",
        "The median epoch's examples/s stands for each backend (one busy moment of a shared machine halves an "
        "epoch's); the curves are drawn per epoch (top) and against the run's wall time (bottom).",
        "",
        "![training curves](curves.png)",
        "",
        "## Per epoch",
        "",
    ]
    for r in records:
        md += [
            f"### {r['framework']}",
            "",
            markdown_table(
                ["epoch", "loss", "train acc", "test acc", "examples/s", "seconds", "wall s"],
                [
                    [e["epoch"], e["loss"], e["train_acc"], e["test_acc"], e["examples_per_sec"], e["seconds"], wall]
                    for e, wall in zip(r["history"]["epochs"], wall_times(r["history"]["epochs"]), strict=True)
                ],
            ),
            "",
        ]

    atomic_write(out / "report.md", lambda f: f.write("\n".join(md).encode()))
    results = json.dumps({"runs": records, "test_acc_spread": spread}, indent=1)
    atomic_write(out / "results.json", lambda f: f.write(results.encode()))
    return {
        "markdown": out / "report.md",
        "plot": out / "curves.png",
        "json": out / "results.json",
        "table": format_table(headers, rows),
    }
