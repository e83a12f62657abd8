"""`vgg summary`: every backend's layers, shapes and parameters beside the spec."""

from __future__ import annotations

import sys

from .. import report
from ..backends import BACKENDS, get_backend, parse_backends
from ..exits import FAILED
from ..spec import check_memory, spec
from .options import (
    SUMMARY_DEFAULTS,
    add_net_args,
    fill_defaults,
    net_config,
    positive,
)


def add_arguments(p) -> None:
    add_net_args(p, SUMMARY_DEFAULTS)
    p.add_argument("--backends", default="all", help="'all' or a comma list of " + ", ".join(BACKENDS))
    p.add_argument("--in-channels", type=positive(int), default=1)
    p.add_argument("--num-classes", type=positive(int), default=10)
    p.add_argument("--input-size", type=positive(int), default=224)


def run(args) -> int:
    fill_defaults(args, SUMMARY_DEFAULTS)
    config = net_config(args, args.input_size, args.in_channels, args.num_classes)
    check_memory(config)  # one this machine could not build is refused, as by every command
    s = spec(config)
    names = parse_backends(args.backends)
    headers = ["layer", "spec shape", "spec params"]
    columns, totals = [], {}
    for name in names:
        b = get_backend(name)
        net = b.abstract_network(config)  # its layers and shapes, no parameter memory
        trace = b.layer_shapes(net, config.input_size, config.in_channels)
        columns.append((name, trace, b.layer_params(net)))
        totals[name] = b.count_params(net)
        headers += [f"{name} shape", f"{name} params"]
    rows, bad = [], 0
    for i, srow in enumerate(s.group_rows()):
        row = [srow["name"], (1, *srow["shape"]), srow["params"]]
        for _, trace, params in columns:
            shape, n = trace[i][1], params.get(srow["name"], 0)
            ok = trace[i][0] == srow["name"] and shape == (1, *srow["shape"]) and n == srow["params"]
            bad += not ok
            row += [report.fmt(shape) + ("" if ok else "  ≠"), n]
        rows.append(row)
    rows.append(["total", "", s.params, *(v for n in names for v in ("" if totals[n] == s.params else "≠", totals[n]))])
    print(report.format_table(headers, rows, title=f"summary: {config.describe()}"))
    print(
        f"MACs per example: {s.macs:,}   batch-norm statistics: {s.buffers:,}   "
        f"receptive field of the last conv: {max(layer.rf for layer in s.layers if layer.rf)} px"
    )
    mismatched = bad + sum(totals[n] != s.params for n in names)
    if mismatched:
        print(f"DISAGREEMENT: {mismatched} value(s) differ from the spec (marked ≠)", file=sys.stderr)
        return FAILED
    print(f"all {len(names)} backend(s) agree with the spec")
    return 0
