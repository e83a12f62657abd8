"""``vgg bench``: training and inference speed per backend, beside the book's plain code and the machine's peak.

Everything is measured in one run, so every ratio compares numbers taken side by side: per backend the
book's plain step and the project's step (each backend's ``bench`` module says what differs), on one real
Fashion-MNIST batch held in memory and on the real resized batch stream; and the machine's peak, the best
GFLOP/s of a large matrix product in any of the frameworks. Achieved GFLOP/s use the analytic FLOPs of
``common.spec`` (forward + backward = 6 x MACs per example for training, 2 x MACs for inference).
"""
from __future__ import annotations

import importlib
import json
import statistics
import time

from .arch import make_config
from .backends import display_name, get_backend
from .report import format_table, fmt
from .spec import spec
from .training import PRECISIONS, Progress, check_precision
from .weights import atomic_write, xavier_init

BENCH_DEFAULTS = {"arch": "vgg11", "ratio": 4, "resize": 96, "batch_size": 128, "steps": 4, "repeats": 3}


def best_seconds(fn, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` (after one untimed call that warms it up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _forever(batches):
    """Iterate ``batches`` again and again (an iterator object restarts: a loader re-shuffles and re-resizes)."""
    while True:
        yield from batches


def examples_per_sec(step, batches, batch_size: int, steps: int, repeats: int, warmup: int = 2) -> float:
    """Median over ``repeats`` of examples/s of ``steps`` calls of ``step`` (after ``warmup`` calls)."""
    feed = _forever(batches)
    for _ in range(warmup):
        step(*next(feed))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(feed))
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_backend(name: str, config, batch_size: int, steps: int, repeats: int, precision: str,
                  progress: Progress) -> dict:
    """One backend's numbers: train and inference examples/s on the book's and the project's path, the peaks."""
    b = get_backend(name)
    bench = importlib.import_module(f"{b.__name__}.bench")
    start_weights = xavier_init(config, 0)
    stream, _ = b.load_data_fashion_mnist(batch_size, config.input_size, 0, None, batch_size * (steps + 2), 1)
    memory = [next(iter(stream))]  # one real resized batch, already the framework's tensors
    out = {"backend": name, "framework": display_name(name), "precision": precision,
           "peak_gflops": {p: bench.matmul_gflops(p) for p in PRECISIONS}}
    progress.update()
    for path in bench.PATHS:
        p = precision if path == "project" else "fp32"
        with bench.policy(p):
            net = b.import_weights(b.vgg(**config.vgg_kwargs()), start_weights)
        step = bench.train_step(net, path, p)
        out[f"train_{path}"] = examples_per_sec(step, memory, batch_size, steps, repeats)
        progress.update()
        if path == "project":  # the same step fed by the real loader: resizing and conversion included
            out["train_project_real_data"] = examples_per_sec(step, stream, batch_size, steps, repeats)
            progress.update()
        infer = bench.infer_step(net, path, p)
        out[f"infer_{path}"] = examples_per_sec(lambda x, y: infer(x), memory, batch_size, steps, repeats)
        progress.update()
    return out


def summarise(results: list[dict], config, batch_size: int) -> dict:
    """Derived numbers: GFLOP/s, fraction of the machine's peak, speedup over the book's path, data-path ratio."""
    s = spec(config)
    peaks = {p: max((r["peak_gflops"][p] for r in results if r["peak_gflops"][p]), default=None)
             for p in PRECISIONS}
    for r in results:
        peak = peaks[r["precision"]] or peaks["fp32"]
        r["train_flops_per_example"], r["infer_flops_per_example"] = s.train_flops, 2 * s.macs
        r["train_gflops"] = r["train_project"] * s.train_flops / 1e9
        r["train_fraction_of_peak"] = r["train_gflops"] / peak
        r["train_book_fraction_of_peak"] = r["train_book"] * s.train_flops / 1e9 / peaks["fp32"]
        r["infer_gflops"] = r["infer_project"] * 2 * s.macs / 1e9
        r["train_speedup"] = r["train_project"] / r["train_book"]
        r["infer_speedup"] = r["infer_project"] / r["infer_book"]
        r["real_data_ratio"] = r["train_project_real_data"] / r["train_project"]
    return {"config": config.to_dict(), "batch_size": batch_size, "peak_gflops": peaks, "runs": results}


def bench_table(summary: dict) -> str:
    """The printed table: one row per backend."""
    headers = ["backend", "precision", "train ex/s (book)", "train ex/s", "speedup", "GFLOP/s", "of peak",
               "real-data ratio", "infer ex/s (book)", "infer ex/s", "speedup"]
    rows = [[r["framework"], r["precision"], r["train_book"], r["train_project"], r["train_speedup"],
             r["train_gflops"], f"{r['train_fraction_of_peak']:.0%}", r["real_data_ratio"], r["infer_book"],
             r["infer_project"], r["infer_speedup"]] for r in summary["runs"]]
    peaks = ", ".join(f"{p} {fmt(v)} GFLOP/s" for p, v in summary["peak_gflops"].items() if v)
    return format_table(headers, rows) + f"\nmachine peak (best matrix product in any framework): {peaks}"


def run_bench(backends: list[str], arch, ratio: int, resize: int, batch_size: int, steps: int, repeats: int,
              precision: str, json_path: str | None = None) -> dict:
    """Measure every backend in turn, print the table, write the JSON; return the summary."""
    check_precision(precision)
    config = make_config(arch, 1, 10, resize, ratio, 4096, 0.5, False)  # the book's head
    progress = Progress(len(backends) * 6, "[bench]")
    results = [bench_backend(name, config, batch_size, steps, repeats, precision, progress) for name in backends]
    progress.close()
    summary = summarise(results, config, batch_size)
    if json_path:
        atomic_write(json_path, lambda f: f.write(json.dumps(summary, indent=1).encode()))
    return summary
