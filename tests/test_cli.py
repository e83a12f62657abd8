"""The `vgg` command end to end: summary agreement, errors without tracebacks, compare's report."""
import json
import subprocess
import sys

import pytest

from common.backends import BACKENDS

from conftest import load_backend


def vgg(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "common.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def all_backends():
    return [load_backend(name) for name in BACKENDS]


def test_summary_of_the_zoo_vgg16_agrees_everywhere(all_backends):
    done = vgg("summary", "--arch", "vgg16", "--in-channels", "3", "--num-classes", "1000", "--backends", "all")
    assert done.returncode == 0, done.stderr
    total = next(line for line in done.stdout.splitlines() if line.startswith("total"))
    assert total.count("138,357,544") == 4            # the spec and the three backends
    assert "all 3 backend(s) agree with the spec" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["summary", "--arch", "vgg12"], "unknown arch 'vgg12'; known: vgg11"),
    (["summary", "--input-size", "28", "--backends", "torch"], "minimum is 32"),
    (["summary", "--backends", "caffe"], "unknown backend 'caffe'; choose from torch, tf, mxnet"),
    (["train", "--backend", "torch", "--resize", "28"], "minimum is 32"),
    (["train", "--backend", "torch", "--epochs", "-1"], "argument --epochs: must be >= 0"),
    (["train", "--backend", "torch", "--lr", "0"], "argument --lr: must be > 0"),
    (["train", "--backend", "torch", "--batch-size", "0"], "argument --batch-size: must be > 0"),
    (["convert", "/nonexistent.npz", "/tmp/x.npz", "--to", "npz"], "weights file /nonexistent.npz does not exist"),
])
def test_bad_input_is_one_message_and_a_non_zero_exit(args, message):
    done = vgg(*args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_compare_end_to_end_writes_report_plot_and_json(all_backends, tmp_path):
    done = vgg("compare", "--epochs", "2", "--train-limit", "1024", "--test-limit", "512", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["backend"] for r in results["runs"]] == list(BACKENDS)
    for run in results["runs"]:
        assert len(run["history"]["epochs"]) == 2 and run["train_examples"] == 1024 and run["test_examples"] == 512
        assert (tmp_path / run["backend"] / "weights.npz").is_file()
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    report = (tmp_path / "report.md").read_text()
    assert "| PyTorch |" in report and "| tf.keras |" in report and "| MXNet Gluon |" in report
    assert "![training curves](curves.png)" in report
