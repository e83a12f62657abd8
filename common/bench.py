"""``vgg bench``: training and inference speed per backend, beside the book's plain code and the machine's peak.

Everything is measured in one run, so every ratio compares numbers taken side by side: per backend the
book's plain step and the project's step (each backend's ``bench`` module says what differs), on one real
Fashion-MNIST batch held in memory and on the real resized batch stream; and the machine's peak, the best
GFLOP/s of a large matrix product in any of the frameworks. Achieved GFLOP/s use the analytic FLOPs of
``common.spec`` (forward + backward = 6 x MACs per example for training, 2 x MACs for inference).

The process keeps the memory it frees (``common.host.reuse_freed_memory``, set before any framework is
imported, as ``vgg train`` does), for the book's path and the project's alike: the comparison is of the code
paths, and the numbers do not depend on which backend ran first. ``VGG_REUSE_FREED_MEMORY=0`` measures without.

``--sweep`` (:func:`run_sweep`) measures how that cost grows: the project's path at several input sizes and
width ratios, each point in a fresh process (``python -m common.bench POINT``) so that its peak resident
memory is its own; a table, a PNG plot (:func:`plot_sweep`) and the JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from .arch import NetConfig, arch_text, make_any_config
from .backends import display_name, get_backend
from .data import fashion_mnist_batches
from .distributed import BANDWIDTHS, ENGINES, check_workers, predict
from .errors import ConfigError, VGGError
from .files import TargetAppeared, atomic_write
from .host import Progress, reuse_freed_memory
from .interchange import OnnxModel, require
from .processes import child_env, die_with_parent, python_module
from .recipe import check_precision
from .report import fmt, format_table, save_figure
from .spec import spec
from .weights import xavier_init


class BenchDefaults(TypedDict):
    arch: str
    ratio: int
    resize: int
    batch_size: int
    steps: int  # timed steps per repeat
    repeats: int  # the median is reported


class SweepDefaults(TypedDict):
    sizes: tuple[int, ...]  # input sizes, each at the sweep's ratio
    ratios: tuple[int, ...]  # width ratios, each at the sweep's input size
    batch_size: int
    steps: int
    repeats: int
    plot: str  # where the PNG goes


BENCH_DEFAULTS: BenchDefaults = {"arch": "vgg11", "ratio": 4, "resize": 96, "batch_size": 128, "steps": 4, "repeats": 3}
# `vgg bench --sweep`: input sizes (at --ratio) and width ratios (at --resize), each point a fresh process.
# Few steps and a small batch, so that the whole grid takes minutes on a 2-core CPU (224 px at batch 128
# would need several GiB per point and minutes per step at ratio 1).
SWEEP_DEFAULTS: SweepDefaults = {
    "sizes": (32, 64, 96, 160, 224),
    "ratios": (8, 4, 2, 1),
    "batch_size": 32,
    "steps": 2,
    "repeats": 1,
    "plot": "runs/bench/sweep.png",
}


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


def examples_per_sec(
    step, batches, batch_size: int, steps: int, repeats: int, warmup: int = 2, sync=lambda: None
) -> float:
    """Median over ``repeats`` of examples/s of ``steps`` calls of ``step`` (after ``warmup`` calls); ``sync()``
    waits for a device that runs behind the host before each clock is read."""
    feed = _forever(batches)
    for _ in range(warmup):
        step(*next(feed))
    rates = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(feed))
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


# The matrix products a bench measures the peak with: fp32, TF32 (a GPU's tensor cores on float32 data; None on
# a CPU) and bf16; each the best of PEAK_REPEATS products. A busy moment of a shared machine only ever lowers a
# product's speed, so more tries come closer to the peak (a bench run on the 2-core VM once measured PyTorch's
# fp32 product at 142 GFLOP/s in 5 tries, where it usually measures 165-180).
PEAK_PRECISIONS = ("fp32", "tf32", "bf16")
PEAK_REPEATS = 10


def bench_modules(name: str):
    """The backend package and its ``bench`` module."""
    b = get_backend(name)
    return b, importlib.import_module(f"{b.__name__}.bench")


def build_net(b, bench, config, precision: str):
    """The network of ``config`` in backend ``b``, built for ``precision``, from the seed-0 Xavier weights."""
    with bench.policy(precision):
        return b.import_weights(b.from_config(config), xavier_init(config, 0))


def bench_backend(
    name: str,
    config,
    batch_size: int,
    steps: int,
    repeats: int,
    precision: str,
    progress: Progress,
    device: str = "cpu",
    compile: bool = False,
) -> dict:
    """One backend's numbers on ``device``: train and inference examples/s on the book's and the project's path,
    the peaks, and (on a GPU) its name and the allocator's peak memory. ``compile``: the project's path through
    the framework's compiler (``train(..., compile=True)``); the graphs it built, where counted, and the wall time
    of the project path's measurement, compilation included, are recorded."""
    b, bench = bench_modules(name)
    device = b.get_device(device)
    stream, _ = b.load_data_fashion_mnist(batch_size, config.input_size, 0, None, batch_size * (steps + 2), 1)
    stream = b.on_device(stream, device)  # the real data as training feeds it on this device
    memory = [next(iter(stream))]  # one real resized batch, already the framework's tensors (on a GPU, resident)
    out: dict[str, Any] = {
        "backend": name,
        "framework": display_name(name),
        "precision": precision,
        "peak_gflops": {p: bench.matmul_gflops(p, repeats=PEAK_REPEATS, device=device) for p in PEAK_PRECISIONS},
    }
    bench.device_info(device)  # the allocator's peak counts from here
    progress.update()

    def rate(step, batches):
        return examples_per_sec(step, batches, batch_size, steps, repeats, sync=lambda: bench.synchronize(device))

    out["compile"] = compile
    for path in bench.PATHS:
        p = precision if path == "project" else "fp32"
        net = build_net(b, bench, config, p)
        started = time.perf_counter()
        step = bench.train_step(net, path, p, device=device, compile=compile)
        out[f"train_{path}"] = rate(step, memory)
        progress.update()
        if path == "project":  # the same step fed by the real loader: resizing and conversion included
            out["train_project_real_data"] = rate(step, stream)
            progress.update()
        infer = bench.infer_step(net, path, p, device=device, compile=compile)
        out[f"infer_{path}"] = rate(lambda x, _y, infer=infer: infer(x), memory)
        progress.update()
        out[f"seconds_{path}"] = time.perf_counter() - started  # the path's measurement end to end
        if path == "project":
            counted = [c for c in (bench.compiles(step), bench.compiles(infer)) if c is not None]
            out["compiles"] = sum(n for n, _ in counted) if counted else None
            out["compile_seconds"] = sum(s for _, s in counted) if counted else None
    out.update(bench.device_info(device))
    return out


def summarise(results: list[dict], config, batch_size: int) -> dict:
    """Derived numbers: GFLOP/s, fraction of the machine's peak, speedup over the book's path, data-path ratio."""
    s = spec(config)
    peaks = {
        p: max((r["peak_gflops"][p] for r in results if r["peak_gflops"].get(p)), default=None) for p in PEAK_PRECISIONS
    }
    for r in results:
        peak = _peak(r["precision"], peaks)  # None: no framework here multiplies matrices in that precision
        r["train_flops_per_example"], r["infer_flops_per_example"] = s.train_flops, 2 * s.macs
        r["train_gflops"] = r["train_project"] * s.train_flops / 1e9
        r["train_fraction_of_peak"] = r["train_gflops"] / peak if peak else None
        r["train_book_fraction_of_peak"] = r["train_book"] * s.train_flops / 1e9 / _peak("fp32", peaks)
        r["infer_gflops"] = r["infer_project"] * 2 * s.macs / 1e9
        r["train_speedup"] = r["train_project"] / r["train_book"]
        r["infer_speedup"] = r["infer_project"] / r["infer_book"]
        r["real_data_ratio"] = r["train_project_real_data"] / r["train_project"]
    return {
        "config": config.to_dict(),
        "batch_size": batch_size,
        "peak_gflops": peaks,
        "cpu": cpu_features(),
        "runs": results,
    }


def _peak(precision: str, peaks: dict) -> float:
    """The peak a run in ``precision`` is held to: for fp32 on a GPU, the TF32 one (cuDNN's convolutions on
    float32 data use TF32 by default, as the book's own code runs them)."""
    if precision == "fp32":
        return peaks.get("tf32") or peaks["fp32"]
    return peaks[precision]


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction:.0%}"


CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def cpu_features() -> dict:
    """The CPU a bench ran on: its model, the cores this process may use, the matrix features bf16 speed hangs on
    (AMX tiles, AVX512-BF16), read from /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": fields.get("model name") or None,
        "cores": cores,
        "flags": [f for f in CPU_FLAGS if f in flags],
    }


def _compiled(run: dict) -> str:
    """The compile column: off, or the graphs built and their seconds (on, where the framework counts none)."""
    if not run.get("compile"):
        return "off"
    if run.get("compiles") is None:
        return "on"
    return f"{run['compiles']} in {run['compile_seconds']:.0f} s"


def bench_table(summary: dict) -> str:
    """The printed table: one row per backend."""
    headers = [
        "backend",
        "device",
        "precision",
        "train ex/s (book)",
        "train ex/s",
        "speedup",
        "GFLOP/s",
        "of peak",
        "real-data ratio",
        "infer ex/s (book)",
        "infer ex/s",
        "speedup",
        "compiles",
    ]
    rows = [
        [
            r["framework"],
            r["device"],
            r["precision"],
            r["train_book"],
            r["train_project"],
            r["train_speedup"],
            r["train_gflops"],
            _percent(r["train_fraction_of_peak"]),
            r["real_data_ratio"],
            r["infer_book"],
            r["infer_project"],
            r["infer_speedup"],
            _compiled(r),
        ]
        for r in summary["runs"]
    ]
    peaks = ", ".join(f"{p} {fmt(v)} GFLOP/s" for p, v in summary["peak_gflops"].items() if v)
    cpu = summary.get("cpu") or {}
    features = ", ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f in cpu.get("flags", ()))
    gpus = [r for r in summary["runs"] if r.get("name")]
    lines = [
        format_table(headers, rows),
        f"peak (best matrix product in any framework, on {summary.get('device', 'cpu')}): {peaks}",
        *(f"GPU: {r['name']}; {r['framework']}'s allocator peak {fmt(r['peak_memory_mib'])} MiB" for r in gpus),
        f"CPU: {cpu.get('model', 'unknown')}, {cpu.get('cores', '?')} cores; bf16 features: {features or 'none'}",
    ]
    return "\n".join(lines)


def run_bench(
    backends: list[str],
    arch,
    ratio: int,
    resize: int,
    batch_size: int,
    steps: int,
    repeats: int,
    precision: str,
    json_path: str | None = None,
    device: str = "cpu",
    compile: bool = False,
    overwrite: bool = True,
) -> dict:
    """Measure every backend in turn on ``device`` and write the JSON (where ``json_path`` is given); return the
    summary. :func:`bench_table` formats the summary for printing. ``compile``: see :func:`bench_backend`.
    Without ``overwrite``, a file at ``json_path`` is kept, even one that appeared while measuring
    (:func:`common.files.atomic_write`).
    """
    check_precision(precision)
    config = make_any_config(arch, 1, 10, resize, ratio)  # VGG with the book's head, or AlexNet (ratio None)
    progress = Progress(len(backends) * 6, "[bench]")
    results = [
        bench_backend(name, config, batch_size, steps, repeats, precision, progress, device, compile)
        for name in backends
    ]
    progress.close()
    summary = summarise(results, config, batch_size)
    summary["device"] = ", ".join(dict.fromkeys(r["device"] for r in results)) or device
    if json_path:
        atomic_write(json_path, lambda f: f.write(json.dumps(summary, indent=1).encode()), overwrite=overwrite)
    return summary


def _memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB; the peak from getrusage where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def sweep_point(
    backend: str,
    arch,
    ratio: int,
    size: int,
    batch_size: int,
    steps: int,
    repeats: int,
    precision: str,
    device: str = "cpu",
) -> dict:
    """One point of the sweep, measured in this process: the project's training and inference speed, peak memory.

    Meant to run in a fresh process per point (``python -m common.bench``), so that the peak resident memory
    is this point's alone; ``baseline_mib`` is the memory before the network is built (framework and data).
    """
    config = make_any_config(arch, 1, 10, size, ratio)  # as in run_bench
    b, bench = bench_modules(backend)
    device = b.get_device(device)
    stream, _ = b.load_data_fashion_mnist(batch_size, size, 0, None, batch_size, 1)
    memory = [next(iter(b.on_device(stream, device)))]
    baseline = _memory_mib("VmRSS")
    net = build_net(b, bench, config, precision)
    bench.device_info(device)  # the allocator's peak counts from here

    def rate(step):
        return examples_per_sec(step, memory, batch_size, steps, repeats, sync=lambda: bench.synchronize(device))

    train = rate(bench.train_step(net, "project", precision, device=device))
    infer_step = bench.infer_step(net, "project", precision, device=device)
    infer = rate(lambda x, _y: infer_step(x))
    s = spec(config)
    return {
        "backend": backend,
        "framework": display_name(backend),
        "input_size": size,
        "ratio": ratio,
        "batch_size": batch_size,
        "precision": precision,
        "train": train,
        "infer": infer,
        "train_flops_per_example": s.train_flops,
        "train_gflops": train * s.train_flops / 1e9,
        "infer_gflops": infer * 2 * s.macs / 1e9,
        "params": s.params,
        "peak_mib": _memory_mib("VmHWM"),
        "baseline_mib": baseline,
        **bench.device_info(device),
    }


def sweep_grid(sizes, ratios, size: int, ratio: int) -> list[tuple[int, int]]:
    """(input size, ratio) points: every size at ``ratio``, then every ratio at ``size``; each point once."""
    points = [(s, ratio) for s in sizes] + [(size, r) for r in ratios]
    return list(dict.fromkeys(points))


def _measure_in_child(point: dict) -> dict:
    """Run :func:`sweep_point` in a fresh Python process; its JSON is the last line it prints."""
    done = subprocess.run(
        python_module("common.bench", json.dumps(point)),
        capture_output=True,
        text=True,
        env=child_env(PYTHONUNBUFFERED="1"),
        preexec_fn=die_with_parent(),  # no measurement outlives a killed bench
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {
            "backend": point["backend"],
            "framework": display_name(point["backend"]),
            "input_size": point["size"],
            "ratio": point["ratio"],
            "error": f"exit {done.returncode}: {tail}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_sweep(
    backends: list[str],
    arch,
    sizes,
    ratios,
    size: int,
    ratio: int,
    batch_size: int,
    steps: int,
    repeats: int,
    precision: str,
    json_path: str | None = None,
    plot_path: str | None = None,
    device: str = "cpu",
    overwrite: bool = True,
) -> dict:
    """Measure every backend at every point of :func:`sweep_grid`, each in a fresh process; plot, write the JSON.

    Without ``overwrite``, a file at ``json_path`` or ``plot_path`` is kept, even one that appeared while measuring
    (:func:`common.files.atomic_write`): the plot then goes beside it, and the JSON, still written, names it.
    """
    check_precision(precision)
    if arch == "alexnet":
        raise ConfigError(
            "the sweep varies VGG's width ratio and input size, which AlexNet does not have; "
            "measure AlexNet one size at a time with run_bench"
        )
    for s, r in ((max(*sizes, size), min(*ratios, ratio)), (min(*sizes, size), max(*ratios, ratio))):
        make_any_config(arch, 1, 10, s, r)  # a bad point fails before any work
    points = []
    for name in backends:
        for s, r in sweep_grid(sizes, ratios, size, ratio):
            result = _measure_in_child(
                {
                    "backend": name,
                    "arch": arch,
                    "ratio": r,
                    "size": s,
                    "batch_size": batch_size,
                    "steps": steps,
                    "repeats": repeats,
                    "precision": precision,
                    "device": device,
                }
            )
            points.append(result)
            said = result.get("error") or (f"{fmt(result['train'])} train ex/s, {fmt(result['peak_mib'])} MiB peak")
            print(f"[sweep] {display_name(name)} {s} px ratio {r}: {said}", file=sys.stderr, flush=True)
    summary = {
        "arch": arch if isinstance(arch, str) else [list(p) for p in arch],
        "sizes": list(sizes),
        "ratios": list(ratios),
        "size": size,
        "ratio": ratio,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "precision": precision,
        "points": points,
    }
    appeared = None
    if plot_path:
        try:
            plot_sweep(summary, plot_path, overwrite)
            summary["plot"] = str(plot_path)
        except TargetAppeared as e:  # said once the numbers are written too
            appeared, summary["plot"] = e, str(e.kept)
    if json_path:
        atomic_write(json_path, lambda f: f.write(json.dumps(summary, indent=1).encode()), overwrite=overwrite)
    if appeared is not None:
        raise appeared
    return summary


def sweep_table(summary: dict) -> str:
    """The printed table: one row per backend and point."""
    headers = [
        "backend",
        "input px",
        "ratio",
        "GFLOP/example",
        "train ex/s",
        "train GFLOP/s",
        "infer ex/s",
        "peak MiB",
        "over baseline MiB",
    ]
    rows = [
        [
            p["framework"],
            p["input_size"],
            p["ratio"],
            p.get("train_flops_per_example", 0) / 1e9 or None,
            p.get("train"),
            p.get("train_gflops"),
            p.get("infer"),
            p.get("peak_mib"),
            p["peak_mib"] - p["baseline_mib"] if "peak_mib" in p else None,
        ]
        for p in summary["points"]
    ]
    failed = [
        f"{p['framework']} {p['input_size']} px ratio {p['ratio']}: {p['error']}"
        for p in summary["points"]
        if "error" in p
    ]
    return "\n".join(
        [
            format_table(
                headers,
                rows,
                title=f"vgg bench --sweep: {summary['precision']}, batch "
                f"{summary['batch_size']}, {summary['steps']} steps x "
                f"{summary['repeats']} repeat(s) per point",
            ),
            *(f"failed: {line}" for line in failed),
        ]
    )


def plot_sweep(summary: dict, path, overwrite: bool = True) -> None:
    """Training examples/s, GFLOP/s and peak memory against input size (top) and width ratio (bottom); without
    ``overwrite``, a file at ``path`` is kept (:func:`common.files.atomic_write`)."""
    import matplotlib  # deferred: a heavy library, loaded only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ok = [p for p in summary["points"] if "error" not in p]
    series = (
        ("input_size", summary["ratio"], "ratio", "input size (px)"),
        ("ratio", summary["size"], "input_size", "width ratio (conv widths / ratio)"),
    )
    metrics = (
        ("train", "training examples/s"),
        ("train_gflops", "training GFLOP/s"),
        ("peak_mib", "peak memory (MiB)"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for row, (x_key, fixed, fixed_key, x_label) in zip(axes, series, strict=True):
        for backend in dict.fromkeys(p["backend"] for p in ok):
            line = sorted((p[x_key], p) for p in ok if p["backend"] == backend and p[fixed_key] == fixed)
            for ax, (key, _) in zip(row, metrics, strict=True):
                ax.plot(
                    [x for x, _ in line],
                    [p[key] for _, p in line],
                    marker="o",
                    label=line[0][1]["framework"] if line else backend,
                )
        for ax, (key, label) in zip(row, metrics, strict=True):
            ax.set_xlabel(x_label)
            ax.set_title(f"{label}, {fixed_key.replace('_', ' ')} {fixed}")
            ax.grid(alpha=0.3)
            if key == "train":
                ax.set_yscale("log")
                ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2.0, 5.0)))
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
            if x_key == "ratio":
                ax.set_xscale("log", base=2)
                ax.set_xticks(summary["ratios"], [str(r) for r in summary["ratios"]])
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
                ax.invert_xaxis()  # wider networks to the right
            ax.legend()
    fig.suptitle(
        f"vgg bench --sweep ({summary['precision']}, batch {summary['batch_size']}, "
        f"project path, each point a fresh process)"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_figure(fig, path, dpi=100, overwrite=overwrite)


def bench_onnxruntime(exporter: str, config: NetConfig, batch_size: int, steps: int, repeats: int) -> dict:
    """ONNX Runtime's inference examples/s on one real batch, for the seed-0 weights exported by ``exporter``.

    What ``vgg bench`` measures for a framework's inference, on the same network, weights and real batch; the
    graph is written by the framework ``exporter`` names (``torch``, ``tf`` or ``mxnet``).
    """
    b = get_backend(exporter)
    _, test = fashion_mnist_batches(batch_size, config.input_size, 0, "NCHW", None, None, batch_size)
    batch = next(iter(test))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.onnx"
        b.export_onnx(b.import_weights(b.from_config(config), xavier_init(config, 0)), path)
        model = OnnxModel(path, config)
    rate = examples_per_sec(lambda x, y: model(x), [batch], batch_size, steps, repeats)
    return {
        "backend": "onnxruntime",
        "framework": "ONNX Runtime",
        "exporter": display_name(exporter),
        "onnxruntime_version": require("onnxruntime", "running .onnx models").__version__,
        "opset": model.meta["opset"],
        "infer": rate,
        "infer_gflops": rate * 2 * spec(config).macs / 1e9,
    }


if __name__ == "__main__":  # one sweep point: `python -m common.bench '{"backend": "torch", ...}'`
    reuse_freed_memory()
    try:
        print(json.dumps(sweep_point(**json.loads(sys.argv[1]))))
    except VGGError as e:
        sys.exit(f"error: {e}")


def bench_workers(
    names: list[str],
    arch,
    ratio: int | None,
    resize: int,
    batch_size: int,
    steps: int,
    precision: str,
    max_workers: int,
    json_path: str | None,
    overwrite: bool = True,
) -> int:
    """``vgg bench --workers N``: training examples/s of 1..N data-parallel processes of one thread each (the
    same threads in all), each a real ``vgg train --workers K`` run of two epochs of ``steps`` global batches,
    the second timed; beside it, what ``common.distributed.predict`` expects from the one-process speed."""

    rows = []
    for name in names:
        check_workers(max_workers, batch_size, name)
        config = make_any_config(arch, 1, 10, resize, ratio)
        flops, single = spec(config).train_flops, None
        for workers in range(1, max_workers + 1):
            with tempfile.TemporaryDirectory() as out:
                cmd = python_module("common.cli", "train", "--backend", name, "--arch", arch_text(arch))
                cmd += [] if ratio is None else ["--ratio", str(ratio)]
                cmd += ["--resize", str(resize), "--batch-size", str(batch_size), "--epochs", "2"]
                cmd += ["--train-limit", str(batch_size * steps), "--test-limit", str(batch_size), "--device", "cpu"]
                cmd += ["--precision", precision, "--workers", str(workers), "--out", out]
                env = child_env(OMP_NUM_THREADS="1", MXNET_OMP_MAX_THREADS="1")
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=die_with_parent())
                if done.returncode != 0:
                    raise ConfigError(f"the {name} run with {workers} workers failed: {done.stderr.strip()[-300:]}")
                rate = json.loads((Path(out) / "history.json").read_text())["history"]["epochs"][-1]["examples_per_sec"]
            single = single or rate
            expected = predict(config, batch_size, workers, single * flops, BANDWIDTHS["10 Gb/s"])
            rows.append(
                [
                    display_name(name),
                    ENGINES[name].split(" (")[0],
                    workers,
                    rate,
                    f"{rate / single:.2f}x",
                    f"{rate / single / workers:.0%}",
                    f"{expected.efficiency:.0%}",
                ]
            )
    headers = ["backend", "engine", "processes", "train examples/s", "speedup", "efficiency", "model (10 Gb/s)"]
    print(format_table(headers, rows, title=f"data parallel, one thread per process: {config.describe()}"))

    cpu = cpu_features().get("model", "unknown")
    print(f"CPU: {cpu}; the model: docs/distributed.md")
    if json_path is not None:
        record = {"config": config.to_dict(), "batch_size": batch_size, "steps": steps, "cpu": cpu}
        record["rows"] = [dict(zip(headers, row, strict=True)) for row in rows]
        atomic_write(json_path, lambda f: f.write(json.dumps(record, indent=1).encode()), overwrite=overwrite)
        print(f"numbers: {json_path}")
    return 0
