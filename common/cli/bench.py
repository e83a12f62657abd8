"""`vgg bench`: training and inference speed per backend (common.bench measures; this reads the options)."""

from __future__ import annotations

import json

from .. import report
from ..arch import make_any_config
from ..backends import BACKENDS, is_available, parse_backends, require
from ..bench import (
    BENCH_DEFAULTS,
    SWEEP_DEFAULTS,
    bench_onnxruntime,
    bench_table,
    bench_workers,
    run_bench,
    run_sweep,
    sweep_table,
)
from ..errors import ConfigError
from ..files import atomic_write
from ..host import reuse_freed_memory
from ..spec import check_memory
from ..training import parse_device
from .options import (
    add_compile,
    add_device,
    add_precision,
    arch_option,
    fill_defaults,
    positive,
    positive_ints,
    prepare_file,
)


def add_arguments(p) -> None:
    bd, sw = BENCH_DEFAULTS, SWEEP_DEFAULTS
    p.add_argument(
        "--backends",
        default="all",
        help="'all' or a comma list of " + ", ".join(BACKENDS) + "; add onnxruntime for ONNX Runtime's inference",
    )
    p.add_argument("--arch", type=arch_option, default=bd["arch"])
    p.add_argument(
        "--ratio",
        type=positive(int),
        default=None,
        help=f"VGG (default {bd['ratio']}; with --sweep, the ratio of the input-size series)",
    )
    p.add_argument(
        "--resize",
        type=positive(int),
        default=bd["resize"],
        help=f"(default {bd['resize']}; with --sweep, the input size of the ratio series)",
    )
    p.add_argument(
        "--batch-size",
        type=positive(int),
        default=None,
        help=f"(default {bd['batch_size']}; {sw['batch_size']} with --sweep)",
    )
    p.add_argument(
        "--steps",
        type=positive(int),
        default=None,
        help=f"steps per timed repeat (default {bd['steps']}; {sw['steps']} with --sweep)",
    )
    p.add_argument(
        "--repeats",
        type=positive(int),
        default=None,
        help=f"the median is shown (default {bd['repeats']}; {sw['repeats']} with --sweep)",
    )
    add_precision(p)
    add_device(p)
    add_compile(p)
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="how cost grows: every --sizes at --ratio and every "
        "--ratios at --resize, the project's path, each point in a fresh process (peak memory per point)",
    )
    p.add_argument(
        "--sizes",
        type=positive_ints,
        default=None,
        help=f"with --sweep: input sizes (default {','.join(map(str, sw['sizes']))})",
    )
    p.add_argument(
        "--ratios",
        type=positive_ints,
        default=None,
        help=f"with --sweep: width ratios (default {','.join(map(str, sw['ratios']))})",
    )
    p.add_argument(
        "--plot", default=None, help=f"with --sweep: where the plot goes, .png, .pdf or .svg (default {sw['plot']})"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the --json or --plot file if it exists")
    p.add_argument(
        "--workers",
        type=positive(int),
        default=1,
        help="data-parallel training of 1..N processes, one thread each, beside the scaling model (default 1: off)",
    )


def _bench_onnxruntime(names: list[str], args, batch_size: int, steps: int, repeats: int, summary: dict | None):
    """The ``onnxruntime`` row of ``vgg bench``: inference only, beside the frameworks' inference.

    ONNX Runtime does not train and runs a graph a framework exported, so it cannot fill a row of the training
    table: it gets its own table, of inference examples/s on the same network, weights and real batch.
    """

    if args.precision != "fp32":
        raise ConfigError("ONNX Runtime runs the exported float32 graph: leave onnxruntime out of a bf16 bench")
    exporter = names[0] if names else next((n for n in BACKENDS if is_available(n)), None)
    if exporter is None:
        raise ConfigError("the onnxruntime entry needs a framework to export the network; install one")
    config = make_any_config(args.arch, 1, 10, args.resize, args.ratio)
    row = bench_onnxruntime(exporter, config, batch_size, steps, repeats)
    rows = [[r["framework"], "", r["infer_project"], r["infer_gflops"]] for r in (summary or {}).get("runs", [])]
    rows.append([row["framework"], f"{row['exporter']}, opset {row['opset']}", row["infer"], row["infer_gflops"]])
    print(
        report.format_table(
            ["executor", "graph exported by", "infer ex/s", "GFLOP/s"],
            rows,
            title=f"inference, {config.describe()}, batch {batch_size} (frameworks: the project's path)",
        )
    )
    return row


PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # what --plot may be named: formats matplotlib writes


GPU_STEPS = 25  # `vgg bench --device cuda`: timed steps per repeat where --steps is left out


def _entries(args) -> tuple[list[str], bool]:
    """The frameworks --backends names (each installed) and whether it names onnxruntime, checked with --sweep."""
    entries = [n.strip() for n in args.backends.split(",")]
    onnxruntime = "onnxruntime" in entries  # ONNX Runtime: an inference-only fourth row (_bench_onnxruntime)
    frameworks = [n for n in entries if n != "onnxruntime"]
    try:
        names = parse_backends(frameworks) if frameworks or not onnxruntime else []
    except ConfigError as e:
        raise ConfigError(f"{e}; add onnxruntime for ONNX Runtime's inference") from None
    if onnxruntime and args.sweep:
        raise ConfigError("--sweep measures the frameworks' training; leave onnxruntime out of --backends")
    for name in names:
        require(name)
    if args.sweep and args.arch == "alexnet":
        raise ConfigError(
            "--sweep varies VGG's width ratio and input size; for AlexNet measure one size at a "
            "time: vgg bench --arch alexnet --resize N"
        )
    return names, onnxruntime


def _check_points(args, batch_size: int) -> None:
    """Every network the bench builds fits this machine; --sizes, --ratios and --plot only with --sweep."""
    points = [(args.resize, args.ratio)]
    if args.sweep:
        points += [(s, args.ratio) for s in args.sizes or SWEEP_DEFAULTS["sizes"]]
        points += [(args.resize, r) for r in args.ratios or SWEEP_DEFAULTS["ratios"]]
    for size, ratio in points:  # each network as run_bench and run_sweep build it
        check_memory(make_any_config(args.arch, 1, 10, size, ratio), batch_size)
    if not args.sweep and (args.sizes or args.ratios or args.plot is not None):
        raise ConfigError("--sizes, --ratios and --plot belong to --sweep; add --sweep")


def run(args) -> int:
    reuse_freed_memory()  # as vgg train runs, before any framework starts its threads (common.bench)
    names, onnxruntime = _entries(args)
    fill_defaults(args, {"arch": BENCH_DEFAULTS["arch"], "ratio": BENCH_DEFAULTS["ratio"]})  # AlexNet has no ratio
    defaults = SWEEP_DEFAULTS if args.sweep else BENCH_DEFAULTS  # for the options left out
    batch_size = args.batch_size or defaults["batch_size"]
    _check_points(args, batch_size)
    # Checked before the minutes of measuring, which must not be lost to a bad path; written after them without
    # replacing a file that appeared meanwhile (kept beside it), unless --overwrite.
    if args.json is not None:
        prepare_file(args.json, args.overwrite, "--json", create=True)
    if args.sweep:
        args.plot = args.plot or SWEEP_DEFAULTS["plot"]
        prepare_file(args.plot, args.overwrite, "--plot", PLOT_SUFFIXES, create=True)
    gpu = parse_device(args.device)[0] == "cuda"  # a GPU step takes milliseconds: more of them per timed repeat
    steps = args.steps or (GPU_STEPS if gpu and not args.sweep else defaults["steps"])
    repeats = args.repeats or defaults["repeats"]
    if args.compile and (args.sweep or args.workers > 1):
        raise ConfigError("--compile measures the compiled step in the bench's table: leave out --sweep and --workers")
    if args.workers > 1:
        if args.sweep or onnxruntime:
            raise ConfigError("--workers measures data-parallel training alone: leave out --sweep and onnxruntime")
        return bench_workers(
            names,
            args.arch,
            args.ratio,
            args.resize,
            batch_size,
            steps,
            args.precision,
            args.workers,
            args.json,
            args.overwrite,
        )
    if args.sweep:
        plot = args.plot
        summary = run_sweep(
            names,
            args.arch,
            args.sizes or list(SWEEP_DEFAULTS["sizes"]),
            args.ratios or list(SWEEP_DEFAULTS["ratios"]),
            args.resize,
            args.ratio,
            batch_size,
            steps,
            repeats,
            args.precision,
            args.json,
            plot,
            args.device,
            args.overwrite,
        )
        print(sweep_table(summary))
        print(f"plot: {plot}")
    else:
        summary = None
        if names:
            json_path = None if onnxruntime else args.json  # with ONNX Runtime's row, written below
            summary = run_bench(
                names,
                args.arch,
                args.ratio,
                args.resize,
                batch_size,
                steps,
                repeats,
                args.precision,
                json_path,
                args.device,
                args.compile,
                args.overwrite,
            )
            print(bench_table(summary))
        if onnxruntime:
            row = _bench_onnxruntime(names, args, batch_size, steps, repeats, summary)
            if args.json:
                record = {**(summary or {}), "onnxruntime": row}
                atomic_write(
                    args.json, lambda f: f.write(json.dumps(record, indent=1).encode()), overwrite=args.overwrite
                )
    if args.json:
        print(f"numbers: {args.json}")
    return 0
