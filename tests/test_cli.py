"""The `vgg` command end to end: summary agreement, compare's report, convert and evaluate, bench, its own code."""

import json
import subprocess
import sys
from itertools import pairwise

import numpy as np
import pytest
from conftest import load_backend
from helpers import ENV, TINY_CLI, run_in_process, run_main

from common.backends import BACKENDS


def test_summary_of_the_zoo_vgg16_agrees_everywhere(backends, capsys):
    out = run_main(
        capsys, "summary", "--arch", "vgg16", "--in-channels", "3", "--num-classes", "1000", "--backends", "all"
    )
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.count("138,357,544") == 1 + len(BACKENDS)  # the spec and every backend
    assert f"all {len(BACKENDS)} backend(s) agree with the spec" in out


def test_compare_end_to_end_writes_report_plot_and_json(backends, tmp_path, capsys):
    small = [*TINY_CLI, "--epochs", "2", "--train-limit", "512", "--test-limit", "256"]
    done = run_in_process(capsys, "compare", *small, "--out", tmp_path)  # each backend's run: a process of its own
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["backend"] for r in results["runs"]] == list(BACKENDS)
    for run in results["runs"]:
        assert len(run["history"]["epochs"]) == 2 and run["train_examples"] == 512 and run["test_examples"] == 256
        assert (tmp_path / run["backend"] / "weights.npz").is_file()
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    report = (tmp_path / "report.md").read_text()
    assert "| PyTorch |" in report and "| tf.keras |" in report and "| MXNet Gluon |" in report
    assert "![training curves](curves.png)" in report


def test_convert_round_trips_a_trained_model_through_every_framework(backends, tmp_path, capsys):
    torch = backends["torch"]
    run_main(
        capsys,
        "train",
        "--backend",
        "torch",
        "--out",
        tmp_path / "run",
        *TINY_CLI,
        "--epochs",
        "1",
        "--train-limit",
        "2048",
        "--test-limit",
        "256",
        "--batch-size",
        "32",
        "--batch-norm",
    )
    chain = [
        (tmp_path / "run" / "model.pt", None),
        (tmp_path / "m.weights.h5", "tf"),
        (tmp_path / "m.params", "mxnet"),
        (tmp_path / "back.pt", "torch"),
        (tmp_path / "m.npz", "npz"),
    ]
    for (src, _), (dst, to) in pairwise(chain):
        said = run_main(capsys, "convert", src, dst, "--to", to)
        assert f"-> {dst} (" in said and f"{dst.name.split('.', 1)[1]}): vgg11" in said
    accuracies = set()
    runs = [(path, []) for path, _ in chain[:-1]] + [(chain[-1][0], ["--backend", b]) for b in BACKENDS]
    for path, backend in runs:
        out = run_main(capsys, "evaluate", path, "--test-limit", "2000", *backend)
        accuracies.add(out.split("test acc ")[1].split()[0])
    assert len(accuracies) == 1 and float(accuracies.pop()) > 0.3  # identical, and a trained model
    first, back = torch.load_model(chain[0][0]), torch.load_model(chain[3][0])
    for name, array in torch.export_weights(first).items():  # the round trip is exact
        assert np.array_equal(array, torch.export_weights(back)[name]), name


# One step of 16 examples, measured once, of a small network: what the bench tests time.
QUICK_BENCH = ["--resize", "32", "--ratio", "8", "--batch-size", "16", "--steps", "1", "--repeats", "1"]


@pytest.mark.usefixtures("one_peak_product")
def test_bench_measures_every_backend_side_by_side(backends, tmp_path, capsys):
    out = run_main(capsys, "bench", *QUICK_BENCH, "--json", tmp_path / "bench.json")  # the frameworks are loaded
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert [r["backend"] for r in summary["runs"]] == list(BACKENDS)
    assert summary["peak_gflops"]["fp32"] > 1
    for r in summary["runs"]:
        for key in ("train_book", "train_project", "train_project_real_data", "infer_book", "infer_project"):
            assert r[key] > 0, key
        assert r["train_speedup"] == pytest.approx(r["train_project"] / r["train_book"])
        assert 0 < r["train_fraction_of_peak"] < 1.5  # measured, not assumed
    assert "PyTorch" in out and "peak (best matrix product in any framework, on cpu)" in out


def test_bench_sweep_measures_every_point_in_its_own_process(tmp_path, capsys):
    load_backend("torch")
    plot, numbers = tmp_path / "plots" / "sweep.png", tmp_path / "sweep.json"
    done = run_in_process(  # the sweep here, each of its points a `python -m common.bench` process
        capsys,
        "bench",
        "--sweep",
        "--backends",
        "torch",
        "--sizes",
        "32,64",
        "--ratios",
        "8,4",
        "--resize",
        "32",
        "--ratio",
        "8",
        "--batch-size",
        "16",
        "--json",
        str(numbers),
        "--plot",
        str(plot),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(numbers.read_text())
    # every size at --ratio 8, then every ratio at --resize 32; (32, 8) is measured once
    assert [(p["input_size"], p["ratio"]) for p in summary["points"]] == [(32, 8), (64, 8), (32, 4)]
    for p in summary["points"]:
        assert "error" not in p, p
        assert p["backend"] == "torch" and p["batch_size"] == 16 and p["precision"] == "fp32"
        for key in ("train", "infer", "train_gflops", "infer_gflops", "baseline_mib"):
            assert p[key] > 0, key
        assert p["peak_mib"] > p["baseline_mib"]  # the network's own memory shows
        assert p["train_gflops"] == pytest.approx(p["train"] * p["train_flops_per_example"] / 1e9)
    flops = {(p["input_size"], p["ratio"]): p["train_flops_per_example"] for p in summary["points"]}
    assert flops[(64, 8)] > flops[(32, 8)] and flops[(32, 4)] > flops[(32, 8)]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert summary["plot"] == str(plot)
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("PyTorch")]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(32, 8), (64, 8), (32, 4)]
    assert f"plot: {plot}" in done.stdout


@pytest.mark.usefixtures("one_peak_product")
def test_bench_bf16_in_gluon_runs_the_amp_graph(tmp_path, capsys):
    load_backend("mxnet")  # (bf16 converts the bench's own graph: amp.init's global patching is never used)
    done = run_in_process(
        capsys, "bench", "--backends", "mxnet", "--precision", "bf16", *QUICK_BENCH, "--json", tmp_path / "bench.json"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads((tmp_path / "bench.json").read_text())["runs"]
    assert run["precision"] == "bf16" and run["train_project"] > 0 and run["infer_project"] > 0
    assert run["peak_gflops"]["bf16"] is None and run["train_fraction_of_peak"] is None  # no bf16 peak known here
    assert "MXNet Gluon  cpu     bf16" in done.stdout


def test_a_common_package_in_the_working_folder_is_never_imported(tmp_path):
    user = tmp_path / "common"
    user.mkdir()
    (user / "__init__.py").write_text("raise SystemExit('the user code ran')\n")
    small = ["--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", "c"]  # the quickest to start
    command = [sys.executable, "-P", "-m", "common.cli", "compare", *small]  # the `vgg` script: not the folder first
    done = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "the user code ran" not in done.stderr, done.stderr
    assert (tmp_path / "c" / "report.md").is_file()  # the compare's own `vgg train` child ran the project's code
