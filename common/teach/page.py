"""The chapter as one static HTML file: inline CSS and SVG, no script, nothing fetched."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from ..report import compare_rows, fmt
from ..spec import format_bytes
from .chapter import FIT_TEXT, INTRO, NO_RUN, TITLE, Chapter, Run, Section, ShapeTable
from .sources import Source

GENERATOR = "vgg teach"  # the page's <meta name="generator">: how `vgg teach` knows a page it may replace
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1b1b;
background:#fff}
main{max-width:1400px;margin:0 auto;padding:0 20px 48px}
header{background:#24364b;color:#fff;padding:16px 20px}
header h1{margin:0 auto;max-width:1400px;font-size:1.6em}
header p{margin:4px auto 0;max-width:1400px;opacity:.9}
nav{max-width:1400px;margin:12px auto 0;padding:0 20px}
nav ol{display:flex;flex-wrap:wrap;gap:4px 18px;padding:0;margin:0;list-style:none}
nav a{color:#24364b}
h2{border-bottom:2px solid #24364b;padding-bottom:4px;margin-top:40px}
h3{margin-top:28px}
p,li{max-width:80em}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em}
.sbs{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:6px 12px;align-items:stretch}
.col-head{font-weight:600;border-bottom:1px solid #ccc;padding:4px 0;overflow-wrap:anywhere}
.col-head a,.col-head span{font-weight:400;font-size:.85em;display:block}
.part{grid-column:1/-1;font-size:.8em;text-transform:uppercase;letter-spacing:.06em;color:#555;margin-top:6px}
.cell{min-width:0;display:flex;flex-direction:column}
.who{display:none;font-size:.8em;color:#555}
pre.code{margin:0;padding:6px 8px;flex:1;white-space:pre-wrap;overflow-wrap:anywhere;font-size:13px;
line-height:1.4;border:1px solid #e3e3e3;border-radius:4px}
.absent{color:#666;font-style:italic;padding:6px 8px;border:1px dashed #ccc;border-radius:4px;flex:1}
.notes{font-size:.92em}
.notes ul{margin:0;padding-left:1.1em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0;font-size:.85em}
.nw{white-space:nowrap}
th,td{border:1px solid #d5d5d5;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#eef1f5}
td.name,th.name{text-align:left}
td.eq{background:#e9f6ec}
td.ne{background:#fde2e1;font-weight:600}
td small{display:block;color:#555}
.mark{color:#2a7a3b;margin-left:4px}
td.ne .mark{color:#b3261e}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:12px}
figure{margin:0}
figure svg{width:100%;height:auto;border:1px solid #e3e3e3;border-radius:4px}
figcaption{font-size:.85em;color:#444}
.answer{background:#f6f8fb;border-left:4px solid #24364b;padding:8px 14px;margin:8px 0}
.source{font-size:.85em;color:#444}
@media (max-width:760px){
 body{font-size:15px}
 main{padding:0 12px 32px}
 .sbs{grid-template-columns:minmax(0,1fr)}
 .col-head{display:none}
 .who{display:block}
 .charts{grid-template-columns:minmax(0,1fr)}
}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def prose(text: Any) -> str:
    """``text`` escaped, with its `code` spans as <code>."""
    parts = esc(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)) if len(parts) % 2 else esc(text)


def highlighted(text: str) -> str:
    """``text`` as Pygments' Python tokens (spans only: the text itself is kept character for character)."""
    from pygments import highlight  # deferred: loaded only where a page is written
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(text, PythonLexer(stripnl=False, ensurenl=False), HtmlFormatter(nowrap=True))


def pygments_css() -> str:
    from pygments.formatters import HtmlFormatter  # deferred: as in highlighted()

    return HtmlFormatter(style="default").get_style_defs("pre.code")


def where(src: Source) -> str:
    return f'<a href="{esc(src.link)}"><code>{esc(src.shown_path)}:{src.line}</code></a>'


def code_block(src: Source, who: str = "") -> str:
    """One function's whole source, in one cell."""
    return (
        f'<div class="cell" data-fn="{esc(src.qualname)}" data-part="all">'
        f'<span class="who">{esc(who)} {where(src)}</span>'
        f'<pre class="code">{highlighted(src.text)}</pre></div>'
    )


def grid(chapter: Chapter, section: Section) -> str:
    """The section's function in every backend, one column each, cut into parts that line up row by row."""
    names = chapter.names
    cols = section.columns
    out = [f'<div class="sbs" style="--n:{len(names)}" data-grid="{esc(section.dotted)}">']
    for n in names:
        src = cols.get(n)
        place = where(src) if src else f"<span>not in {esc(n)}</span>"
        out.append(f'<div class="col-head" data-backend="{esc(n)}">{esc(chapter.labels[n])}{place}</div>')
    order: list[str] = []
    for n in names:
        src = cols.get(n)
        for part, _ in src.parts if src else []:
            if part not in order:
                order.append(part)
    for k, part in enumerate(order or ["all"]):
        if len(order) > 1:
            out.append(f'<div class="part">{esc(part)}</div>')
        for n in names:
            src = cols.get(n)
            text = dict(src.parts).get(part) if src else None
            link = f" {where(src)}" if src and k == 0 else ""  # on a phone the column heads are hidden
            who = (
                f'<span class="who">{esc(chapter.labels[n])}{" · " + esc(part) if len(order) > 1 else ""}{link}</span>'
            )
            attrs = f'data-backend="{esc(n)}" data-fn="{esc(section.dotted)}" data-part="{esc(part)}"'
            if text is None:
                missing = f"no {section.dotted} in {n}" if src is None else f"no {part} branch"
                out.append(
                    f'<div class="cell" {attrs} data-absent="1">{who}<div class="absent">{esc(missing)}</div></div>'
                )
            else:
                out.append(f'<div class="cell" {attrs}>{who}<pre class="code">{highlighted(text)}</pre></div>')
    out.append("</div>")
    return "\n".join(out)


def side(chapter: Chapter, section: Section, level: int = 3) -> str:
    present = [n for n in chapter.names if section.columns.get(n)]
    head = f'<h{level} id="{esc(section.key)}"><code>{esc(section.title)}</code></h{level}>'
    if not present:
        return f"{head}<p>{esc(section.text)}</p><p>No backend defines <code>{esc(section.dotted)}</code>.</p>"
    return f"{head}<p>{esc(section.text)}</p>{grid(chapter, section)}"


def conventions_grid(chapter: Chapter) -> str:
    out = [f'<div class="sbs notes" style="--n:{len(chapter.names)}" data-grid="conventions">']
    out += [f'<div class="col-head">{esc(chapter.labels[n])}</div>' for n in chapter.names]
    for n in chapter.names:
        c = chapter.conventions[n]
        label = esc(chapter.labels[n])
        if c is None:
            out.append(
                f'<div class="cell" data-backend="{esc(n)}"><span class="who">{label}</span><p>nothing read: no '
                "<code>model._layer</code> with an <code>if p.kind == ...</code> branch per kind</p></div>"
            )
            continue
        eps = (
            f"epsilon {fmt(c.epsilon)} as written here"
            + (f"; the framework's default is {fmt(c.epsilon_default)}" if c.epsilon_default is not None else "")
            if c.epsilon is not None
            else f"epsilon left at the framework's default {fmt(c.epsilon_default)}"
        )
        mom = (
            f"momentum m = {fmt(c.momentum)} here ({esc(c.momentum_meaning)})"
            + (f"; the framework's default is {fmt(c.momentum_default)}" if c.momentum_default is not None else "")
            if c.momentum is not None
            else f"momentum left at the framework's default {fmt(c.momentum_default)}"
        )
        layout = (
            "computes in NHWC (channels last): images arrive as N × H × W × C, and layer_shapes turns its shapes "
            "into NCHW for the table"
            if c.layout == "NHWC"
            else "computes in NCHW (channels first), the layout of the spec"
        )
        out.append(
            f'<div class="cell" data-backend="{esc(n)}"><span class="who">{label}</span><ul>'
            f"<li><strong>Layout</strong>: {esc(layout)}</li>"
            f"<li><strong>Input channels</strong>: {prose(c.in_channels)}</li>"
            f"<li><strong>Batch norm</strong> (<code>{esc(c.bn_call)}</code>): {esc(eps)}</li>"
            f"<li>{mom}</li></ul></div>"
        )
    out.append("</div>")
    return "\n".join(out)


def shape_text(shape: tuple[int, ...] | None) -> str:
    return "—" if shape is None else str(tuple(shape))


def table_html(chapter: Chapter, t: ShapeTable) -> str:
    names = list(t.totals)
    head = ['<th class="name">layer</th>', "<th>spec (NCHW)</th>"]
    head += [f"<th>{esc(chapter.labels[n])}</th>" for n in names]
    head += ["<th>spec params</th>"] + [f"<th>{esc(chapter.labels[n])} params</th>" for n in names] + ["<th>MACs</th>"]
    rows = []
    for r in t.rows:
        cells = [
            f'<td class="name"><code>{esc(r.layer)}</code></td>',
            f'<td data-col="spec" data-layer="{esc(r.layer)}" class="nw">{esc(shape_text(r.spec_shape))}</td>',
        ]
        for n in names:
            shape = r.shapes.get(n)
            ok = shape == r.spec_shape and r.names.get(n) == r.layer
            own = r.own.get(n)
            extra = (
                f"<small>{esc(t.layouts[n])} {esc(shape_text(own))}</small>" if own is not None and own != shape else ""
            )
            named = "" if r.names.get(n) == r.layer else f"<small>named {esc(r.names.get(n))}</small>"
            cells.append(
                f'<td class="{"eq" if ok else "ne"}" data-col="{esc(n)}" data-layer="{esc(r.layer)}">'
                f'<span class="nw">{esc(shape_text(shape))}</span>'
                f'<span class="mark">{"=" if ok else "≠"}</span>{extra}{named}</td>'
            )
        cells.append(f'<td data-col="spec-params">{r.spec_params:,}</td>')
        for n in names:
            ok = r.params.get(n) == r.spec_params
            cells.append(
                f'<td class="{"eq" if ok else "ne"}" data-col="{esc(n)}-params">{r.params.get(n, 0):,}'
                f'<span class="mark">{"=" if ok else "≠"}</span></td>'
            )
        cells.append(f'<td data-col="macs">{r.macs:,}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    total = ['<td class="name"><strong>total</strong></td>', "<td></td>", *("<td></td>" for _ in names)]
    total.append(f"<td><strong>{t.spec_params:,}</strong></td>")
    for n in names:
        ok = t.totals[n] == t.spec_params
        total.append(
            f'<td class="{"eq" if ok else "ne"}" data-col="{esc(n)}-total">{t.totals[n]:,}'
            f'<span class="mark">{"=" if ok else "≠"}</span></td>'
        )
    total.append(f"<td><strong>{t.macs:,}</strong></td>")
    rows.append(f"<tr>{''.join(total)}</tr>")
    bad = t.differences()
    failed = "".join(
        f" {esc(chapter.labels[n])}'s shape inference failed: {esc(reason)}." for n, reason in t.errors.items()
    )
    verdict = (
        f"Every backend agrees with the spec: {len(t.rows)} layers, {t.spec_params:,} parameters, "
        f"{t.macs:,} MACs per example."
        if not bad
        else f"{bad} value(s) differ from the spec (marked ≠)."
    )
    return (
        f'<h3 id="{esc(t.key)}">{esc(t.title)}</h3>'
        f'<div class="scroll"><table class="shapes" data-table="{esc(t.key)}" data-config="{esc(t.config.describe())}">'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="verdict" data-differences="{bad}">{esc(verdict)}{failed} Each backend\'s column is its own '
        f"<code>layer_shapes</code> on its <code>abstract_network</code> (no parameter memory), and its own "
        f"<code>layer_params</code>; a channels-last backend's own shape is shown below its NCHW one.</p>"
    )


# --- charts -----------------------------------------------------------------------------------------------------


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / (count - 1)
    return [lo + i * step for i in range(count)]


def svg_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> str:
    """A line chart as inline SVG (text stays text), one color per series, with a legend."""
    w, h, left, right, top, bottom = 480, 300, 80, 14, 30, 74  # left: a tick like 0.0305 beside the y label
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.05, 1e-3)
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    parts = [
        f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(title)}</title>",
        f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="15" font-weight="600">{esc(title)}</text>',
    ]
    parts.extend(
        f'<line x1="{left}" x2="{w - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e5e5e5"/>'
        f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="13">{t:.3g}</text>'
        for t in _ticks(y0, y1)
    )
    whole = all(float(x).is_integer() for x in xs)  # epochs: whole-number ticks
    xticks = range(math.ceil(x0), math.floor(x1) + 1) if whole and x1 - x0 <= 12 else _ticks(x0, x1)
    parts.extend(
        f'<text x="{px(t):.1f}" y="{h - bottom + 16}" text-anchor="middle" font-size="13">{t:.3g}</text>'
        for t in xticks
    )
    parts.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="#888"/>'
        f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="#888"/>'
        f'<text x="{(left + w - right) / 2}" y="{h - bottom + 34}" text-anchor="middle" font-size="14">'
        f"{esc(xlabel)}</text>"
        f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" font-size="14" '
        f'transform="rotate(-90 16 {(top + h - bottom) / 2})">{esc(ylabel)}</text>'
    )
    lx = 24  # the legend under the whole chart, from its left edge
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        dash = ' stroke-dasharray="6 3"' if i % 2 else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{path}"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in pts]
        ly = h - 14
        parts.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>'
            f'<text x="{lx + 22}" y="{ly}" font-size="14">{esc(name)}</text>'
        )
        lx += 34 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


# --- sections ---------------------------------------------------------------------------------------------------


def results_html(run: Run | None) -> str:
    if run is None:
        return f'<p class="no-run">{prose(NO_RUN)}</p>'
    headers, rows = compare_rows(run.records)
    table = (
        '<div class="scroll"><table class="results"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
        + "</tbody></table></div>"
    )
    charts = [
        figure(svg_chart(run.series("loss"), "training loss per epoch", "epoch", "loss"), "Mean training loss."),
        figure(svg_chart(run.series("test_acc"), "test accuracy per epoch", "epoch", "accuracy"), "Test accuracy."),
        figure(
            svg_chart(run.against_time("test_acc"), "test accuracy against time", "seconds of training", "accuracy"),
            "Test accuracy at the end of each epoch, against the training time so far (each framework's own clock).",
        ),
        figure(
            svg_chart(run.against_time("loss"), "training loss against time", "seconds of training", "loss"),
            "Training loss against the training time so far.",
        ),
    ]
    if len(run.records) > 1:
        drift = run.drift()
        spread = {
            "test acc": [(d["epoch"], d["test_acc"]) for d in drift],
            "train acc": [(d["epoch"], d["train_acc"]) for d in drift],
        }
        charts.append(
            figure(
                svg_chart(spread, "how far the frameworks drift apart", "epoch", "max - min across frameworks"),
                "Per epoch, the largest difference between any two frameworks.",
            )
        )
        drift_table = (
            '<div class="scroll"><table class="drift"><thead><tr><th>epoch</th><th>loss: max &minus; min</th>'
            "<th>train acc: max &minus; min</th><th>test acc: max &minus; min</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td>{d['epoch']:.0f}</td><td>{d['loss']:.4f}</td><td>{d['train_acc']:.4f}</td>"
                f"<td>{d['test_acc']:.4f}</td></tr>"
                for d in drift
            )
            + "</tbody></table></div>"
        )
        drift_text = (
            "<p>All frameworks start from the same seeded weights and see the same batches; what separates them is "
            "their arithmetic (summation order, convolution algorithms) and their dropout masks. Epoch by epoch:</p>"
            + drift_table
        )
    else:
        drift_text = "<p>This run trained one framework: there is no drift to show. Run `vgg compare` with several.</p>"
    r0 = run.records[0]
    return (
        f'<p class="run" data-folder="{esc(run.folder)}">From <code>{esc(run.folder / "results.json")}</code>: '
        f"{len(run.records)} framework(s), batch {esc(r0.get('batch_size'))}, {esc(r0.get('optimizer'))} "
        f"lr {esc(fmt(r0.get('lr')))}, {esc(r0.get('train_examples'))} training and {esc(r0.get('test_examples'))} "
        f"test examples of the real Fashion-MNIST.</p>"
        + table
        + f'<div class="charts">{"".join(charts)}</div>'
        + drift_text
    )


def exercises_html(chapter: Chapter) -> str:
    ex = chapter.exercises
    tr = ex["trace"]
    per_block = ", ".join(f"{g}: {k}" for g, k in tr["convs_per_block"].items())
    out = [
        '<h3 id="ex-trace">1. Why does the shape trace print 8 lines for VGG-11\'s 11 layers?</h3>',
        f'<div class="answer" data-exercise="trace"><p>VGG-11 has {tr["weight_layers"]} layers with weights: '
        f"{tr['convs']} convolutions and {tr['dense']} dense layers. The trace prints one line per top-level "
        f"layer, and the convolutions sit inside {tr['blocks']} blocks ({esc(per_block)}), so {tr['hidden']} "
        f"convolutions share a line with their block's first: {tr['blocks']} block lines + {tr['dense']} dense "
        f"lines = {tr['lines_with_weights']} lines for the layers with weights. (The trace here prints every "
        f"top-level layer, also the flatten, ReLU and dropout layers that hold no weights: {tr['trace_lines']} "
        f"lines, {esc(', '.join(tr['groups']))}.)</p>"
        '<p class="source">Numbers: <code>common.spec.spec(make_config("vgg11"))</code>, its layers and '
        "<code>trace()</code>; the table above shows every backend's own trace agreeing.</p></div>",
    ]
    a = ex["alexnet"]
    rows: list[str] = []
    for label_, table in (("VGG-11", a["vgg_rows"]), ("AlexNet", a["alex_rows"])):
        rows.extend(
            f"<tr><td class='name'>{label_}</td><td class='name'><code>{esc(r['name'])}</code></td>"
            f"<td>{esc(shape_text((1, *r['shape'])))}</td><td>{r['params']:,}</td><td>{r['macs']:,}</td></tr>"
            for r in table
            if r["params"] or r["macs"]
        )
    out += [
        '<h3 id="ex-alexnet">2. Why is VGG slower and hungrier than AlexNet?</h3>',
        f'<div class="answer" data-exercise="alexnet"><p>At 224 px, one channel, ten classes: VGG-11 computes '
        f"{a['vgg_macs']:,} multiply-accumulates per image, AlexNet {a['alex_macs']:,}: "
        f"{a['vgg_macs'] / a['alex_macs']:.1f}× as many. VGG keeps 64 to 512 channels at high resolution "
        f"(3×3 convolutions on 224 and 112 px maps), where AlexNet's first layer strides by 4 at once. Parameters: "
        f"VGG-11 {a['vgg_params']:,}, AlexNet {a['alex_params']:,}; the first dense layer, whose input is the "
        f"flattened last feature map, holds {a['vgg_dense1']:.0%} of VGG-11's and {a['alex_dense1']:.0%} of "
        f"AlexNet's.</p>"
        '<div class="scroll"><table><thead><tr><th class="name">network</th><th class="name">layer</th>'
        "<th>output</th><th>params</th><th>MACs</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        + speeds_html(a["speeds"])
        + '<p class="source">Numbers: <code>common.spec</code> for both configurations; speeds from the '
        "<code>vgg bench --json</code> files given with <code>--bench</code>.</p></div>",
    ]
    res = ex["resolution"]
    rrows = "".join(
        f"<tr><td>{ratio}</td><td>{side}</td><td>{v['fc1_in']:,}</td><td>{v['params']:,}</td><td>{v['macs']:,}</td>"
        f"<td>{esc(format_bytes(v['memory_128']))}</td></tr>"
        for (ratio, side), v in res["sizes"].items()
    )
    s1 = res["sizes"]
    out += [
        '<h3 id="ex-resolution">3. What does 96 instead of 224 pixels do?</h3>',
        f'<div class="answer" data-exercise="resolution"><p>Every convolution sees (224/96)² ≈ '
        f"{(224 / 96) ** 2:.2f}× fewer positions: VGG-11 at full width needs "
        f"{s1[(1, 224)]['macs'] / s1[(1, 96)]['macs']:.2f}× fewer MACs at 96 px. The last feature map shrinks from "
        f"{s1[(1, 224)]['final']}×{s1[(1, 224)]['final']} to {s1[(1, 96)]['final']}×{s1[(1, 96)]['final']}, so the "
        f"first dense layer takes "
        f"{s1[(1, 96)]['fc1_in']:,} instead of {s1[(1, 224)]['fc1_in']:,} features and the network has "
        f"{s1[(1, 224)]['params'] - s1[(1, 96)]['params']:,} fewer parameters. Memory to train a batch of 128 "
        f"(weights, gradients, every layer's output) falls with it.</p>"
        '<div class="scroll"><table><thead><tr><th>width ratio</th><th>input px</th><th>fc1 inputs</th>'
        "<th>params</th><th>MACs/example</th><th>memory, batch 128</th></tr></thead><tbody>"
        + rrows
        + "</tbody></table></div>"
        + sweep_html(res["points"])
        + '<p class="source">Numbers: <code>common.spec.spec</code> and <code>common.spec.memory_needed</code>; '
        "measured speeds from a <code>vgg bench --sweep --json</code> file given with <code>--bench</code>.</p></div>",
    ]
    t1 = ex["table1"]
    trows = "".join(
        f"<tr><td class='name'>{esc(name)}</td><td>{esc(' + '.join(map(str, v['per_block'])))} = {v['convs']}</td>"
        f"<td>{v['convs'] + 3}</td><td>{v['params']:,}</td><td>{v['macs']:,}</td></tr>"
        for name, v in t1.items()
    )
    out += [
        '<h3 id="ex-table1">4. VGG-16 and VGG-19 (Table 1 of the paper)</h3>',
        '<div class="answer" data-exercise="table1"><p>Configurations D and E add convolutions to blocks 3 to 5 '
        "(VGG-19: four each); the block widths and the three dense layers stay. On 3 × 224 × 224 images with 1000 "
        "classes:</p>"
        '<div class="scroll"><table><thead><tr><th class="name">network</th><th>convolutions per block</th>'
        "<th>weight layers</th><th>params</th><th>MACs/example</th></tr></thead><tbody>"
        + trows
        + "</tbody></table></div><p>Their shapes, by each backend's own inference, are in the tables below "
        '(<a href="#vgg16-shapes">VGG-16</a>, <a href="#vgg19-shapes">VGG-19</a>).</p>'
        '<p class="source">Numbers: <code>common.spec.spec(make_config(name, in_channels=3, num_classes=1000))'
        "</code>; each backend's counts in the tables below.</p></div>",
    ]
    return "\n".join(out)


def speeds_html(runs: list[dict]) -> str:
    if not runs:
        return (
            "<p>Measured speed: give bench files, e.g. <code>vgg bench --json vgg.json</code>, "
            "<code>vgg bench --arch alexnet --json alexnet.json</code>, then "
            "<code>vgg teach --bench vgg.json --bench alexnet.json</code>.</p>"
        )
    rows = "".join(
        f"<tr><td class='name'>{esc(r['arch'])}</td><td>{esc(r['input_size'])}</td>"
        f"<td class='name'>{esc(r.get('framework', r.get('backend')))}</td>"
        f"<td>{esc(fmt(r['train_project']))}</td><td>{esc(fmt(r.get('infer_project')))}</td>"
        f"<td class='name'><code>{esc(r['file'])}</code></td></tr>"
        for r in runs
    )
    return (
        "<p>Measured (examples per second, training and inference):</p>"
        '<div class="scroll"><table><thead><tr><th class="name">network</th><th>px</th><th class="name">framework</th>'
        "<th>train ex/s</th><th>infer ex/s</th><th class='name'>file</th></tr></thead><tbody>"
        + rows
        + "</tbody></table></div>"
    )


def sweep_html(points: list[dict]) -> str:
    if not points:
        return (
            "<p>Measured speed: give a sweep, e.g. <code>vgg bench --sweep --json sweep.json</code>, then "
            "<code>vgg teach --bench sweep.json</code>.</p>"
        )
    rows = "".join(
        f"<tr><td class='name'>{esc(p.get('framework', p.get('backend')))}</td><td>{esc(p.get('ratio'))}</td>"
        f"<td>{esc(p['input_size'])}</td><td>{esc(fmt(p['train']))}</td><td>{esc(fmt(p.get('infer')))}</td>"
        f"<td>{esc(fmt(p.get('peak_mib')))}</td><td class='name'><code>{esc(p['file'])}</code></td></tr>"
        for p in sorted(points, key=lambda p: (str(p.get("backend")), p.get("ratio", 0), p["input_size"]))
    )
    return (
        "<p>Measured (batch of the sweep; examples per second and peak memory of the process):</p>"
        '<div class="scroll"><table><thead><tr><th class="name">framework</th><th>ratio</th><th>px</th>'
        "<th>train ex/s</th><th>infer ex/s</th><th>peak MiB</th><th class='name'>file</th></tr></thead><tbody>"
        + rows
        + "</tbody></table></div>"
    )


def render(chapter: Chapter) -> str:
    names = ", ".join(chapter.labels[n] for n in chapter.names)
    missing = (
        f" Not shown: {', '.join(chapter.missing)} (its framework is not installed where this page was made)."
        if chapter.missing
        else ""
    )
    toc = [
        ("block", "The block"),
        ("network", "The network"),
        ("training", "Training"),
        ("results", "Results"),
        ("exercises", "Exercises"),
        ("extras", "AlexNet, blocks by hand, parameters, initialization"),
    ]
    body = [
        f"<header><h1>{esc(TITLE)}</h1><p>{esc(names)}. Made by <code>vgg teach</code> on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.{esc(missing)}</p></header>",
        "<nav><ol>" + "".join(f'<li><a href="#{k}">{esc(t)}</a></li>' for k, t in toc) + "</ol></nav>",
        "<main>",
        f"<p>{esc(INTRO)}</p>",
        '<section><h2 id="block">The block</h2>',
        side(chapter, chapter.block),
        side(chapter, chapter.block_helper),
        side(chapter, chapter.layer),
        '<h3 id="differences">What differs</h3><p>Read from each backend\'s <code>_layer</code> and the '
        "framework's own constructor signatures when this page was made:</p>",
        conventions_grid(chapter),
        "</section>",
        '<section><h2 id="network">The network</h2>',
        side(chapter, chapter.network),
        '<h3 id="shared">Shared by every backend</h3><p>The plan of a block, and the public <code>vgg()</code>, '
        "<code>alexnet()</code> and <code>from_config()</code> made from each backend's builder:</p>",
        "".join(code_block(s, s.qualname) for s in chapter.shared_network),
        table_html(chapter, chapter.book_table),
        "</section>",
        '<section><h2 id="training">Training</h2>',
        *(side(chapter, s) for s in chapter.training),
        f'<h3 id="fit"><code>common.training.fit</code>: the epoch loop, once</h3><p>{esc(FIT_TEXT)}</p>',
        code_block(chapter.fit, "common"),
        "</section>",
        '<section><h2 id="results">Results</h2>',
        results_html(chapter.run),
        "</section>",
        '<section><h2 id="exercises">Exercises, answered by measurement</h2>',
        exercises_html(chapter),
        "</section>",
        '<section><h2 id="extras">AlexNet, blocks by hand, parameter management, initialization</h2>',
        table_html(chapter, chapter.extra_tables[0]),
        *(side(chapter, s) for s in chapter.extras),
        *(table_html(chapter, t) for t in chapter.extra_tables[1:]),
        "</section>",
        "</main>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>{esc(TITLE)}</title><style>{CSS}{pygments_css()}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
