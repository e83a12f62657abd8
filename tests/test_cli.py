"""The `vgg` command end to end: summary agreement, errors without tracebacks, compare's report."""

import json
import os
import pickle
from itertools import pairwise

import numpy as np
import pytest
from conftest import load_backend
from helpers import TINY_CLI, run_in_process, run_main, run_vgg

from common.arch import make_config
from common.backends import BACKENDS
from common.weights import save_npz, xavier_init


def test_summary_of_the_zoo_vgg16_agrees_everywhere(backends, capsys):
    out = run_main(
        capsys, "summary", "--arch", "vgg16", "--in-channels", "3", "--num-classes", "1000", "--backends", "all"
    )
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.count("138,357,544") == 1 + len(BACKENDS)  # the spec and every backend
    assert f"all {len(BACKENDS)} backend(s) agree with the spec" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "--dropout", "1e-50"], "--dropout must be a probability in [0, 1) that float32 holds"),
        (["summary", "--arch", "vgg12"], "argument --arch: unknown arch 'vgg12': give a name (vgg11, vgg11_lrn"),
        (["summary", "--input-size", "28", "--backends", "torch"], "minimum is 32"),
        (["summary", "--backends", "caffe"], f"unknown backend 'caffe'; choose from {', '.join(BACKENDS)}"),
        (["train", "--backend", "torch", "--resize", "28"], "minimum is 32"),
        (["train", "--backend", "torch", "--epochs", "-1"], "argument --epochs: must be >= 0"),
        (["train", "--backend", "torch", "--lr", "0"], "argument --lr: must be > 0"),
        (["train", "--backend", "torch", "--batch-size", "0"], "argument --batch-size: must be > 0"),
        (["convert", "/nonexistent.npz", "/tmp/x.npz", "--to", "npz"], "weights file /nonexistent.npz does not exist"),
        (["train", "--backend", "torch", "--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
        (["bench", "--backends", "torch", "--sizes", "32"], "--sizes, --ratios and --plot belong to --sweep"),
        (["bench", "--sweep", "--backends", "torch", "--sizes", "16,32"], "minimum is 32"),
        (["bench", "--sweep", "--ratios", "4,x"], "argument --ratios: expected a int, got 'x'"),
        (["evaluate", "m.pt", "--arch", "vgg13"], "unrecognized arguments: --arch vgg13 (see vgg evaluate --help)"),
    ],
)
def test_bad_input_is_one_message_and_a_non_zero_exit(args, message, capsys):
    done = run_in_process(capsys, *args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_compare_end_to_end_writes_report_plot_and_json(backends, tmp_path):
    done = run_vgg("compare", "--epochs", "2", "--train-limit", "512", "--test-limit", "256", "--out", str(tmp_path))
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "{tmp}/a.npz", "{tmp}/b.onnx", "--to", "npz"], "cannot tell the format of {tmp}/b.onnx"),
        (["convert", "{tmp}/a.npz", "{tmp}/b.params", "--to", "tf"], "a tf model file must be named *.weights.h5"),
        (
            ["evaluate", "{tmp}/a.npz"],
            "a .npz model belongs to no framework: say which one evaluates it with --backend",
        ),
        (["evaluate", "{tmp}/missing.pt"], "model file {tmp}/missing.pt does not exist"),
        (["evaluate", "{tmp}/pickle.pt"], "it was not loaded (loading it could run code)"),
    ],
)
def test_model_files_bad_input(args, message, tmp_path, backends, capsys):
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(RunsCode(tmp_path / "ran")))
    config = make_config(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    save_npz(tmp_path / "a.npz", config, xavier_init(config), "torch", "")  # a valid file of no framework
    done = run_in_process(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode != 0
    assert message.format(tmp=tmp_path) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "ran").exists()  # a pickle payload in a model file never runs


class RunsCode:
    """Unpickling this runs a shell command: what a malicious model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# One step of 16 examples, measured once, of a small network: what the bench tests time.
QUICK_BENCH = ["--resize", "32", "--ratio", "8", "--batch-size", "16", "--steps", "1", "--repeats", "1"]


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


def test_bench_sweep_measures_every_point_in_its_own_process(tmp_path):
    load_backend("torch")
    plot, numbers = tmp_path / "plots" / "sweep.png", tmp_path / "sweep.json"
    done = run_vgg(
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


def test_bench_bf16_in_gluon_runs_the_amp_graph(tmp_path):
    load_backend("mxnet")
    done = run_vgg(
        "bench", "--backends", "mxnet", "--precision", "bf16", *QUICK_BENCH, "--json", tmp_path / "bench.json"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads((tmp_path / "bench.json").read_text())["runs"]
    assert run["precision"] == "bf16" and run["train_project"] > 0 and run["infer_project"] > 0
    assert run["peak_gflops"]["bf16"] is None and run["train_fraction_of_peak"] is None  # no bf16 peak known here
    assert "MXNet Gluon  cpu     bf16" in done.stdout
