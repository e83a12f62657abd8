"""Bad input on the command line: one line on stderr that says what to change, a non-zero exit (2 for a
mistake), never a traceback; and nothing but the command's own lines (the frameworks' start-up notices hidden).

Messages that name options (the option names themselves): test_option_names.py. Where a mistake is in a file, an
output folder, a distributed run or `vgg conform`: test_files.py, test_output_folders.py, test_distributed.py,
test_conform.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import load_backend
from helpers import ENV, ONE_THREAD, TINY, TINY_CLI, one_line, run_in_process, run_vgg

from common.backends import BACKENDS
from common.cli import main
from common.errors import ConfigError

# One thread per framework: runs side by side stay fast, and a resumed run uses the thread count of the first.
THREADS = {k: v for k, v in ONE_THREAD.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


# --- one line, a non-zero exit, no traceback -----------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--backend", "torch", "--resize", "16"], "input_size 16 is too small"),
        (["train", "--backend", "torch", "--resume"], "--resume continues the run saved in an --out folder"),
        (["train", "--backend", "torch", "--arch", "1,0"], "out_channels of block 1 must be a positive integer"),
        (["summary", "--arch", "vgg11", "--ratio", "128"], "leaves block 1 (64 channels) with zero width"),
        (["train", "--backend", "torch", "--arch", "alexnet", "--fc-hidden", "512"], "--fc-hidden changes VGG only"),
        (["compare", "--arch", "alexnet", "--resize", "64"], "input_size 64 is too small for AlexNet"),
        (["bench", "--arch", "alexnet", "--sweep"], "--sweep varies VGG's width ratio and input size"),
        (["bench", "--arch", "alexnet", "--ratio", "2"], "--ratio changes VGG only"),
        (["evaluate", "missing.npz", "--backend", "torch"], "weights file missing.npz does not exist"),
        (["convert", "missing.pt", "out.npz", "--to", "npz"], "missing.pt does not exist"),
    ],
)
def test_every_command_answers_bad_input_with_one_line_and_no_traceback(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_numbers_past_what_the_frameworks_hold_are_refused_before_any_work(tmp_path, capsys):
    torch = load_backend("torch")
    train = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64"]
    assert "float32's smallest normal and largest" in one_line(capsys, [*train, "--lr", "1e39"])
    assert "float32's smallest normal and largest" in one_line(capsys, [*train, "--lr", "1e-39"])  # MXNet's error
    assert "at most 2,147,483,647" in one_line(capsys, ["summary", "--arch", "1,99999999999999999999"])
    assert "(at most 256)" in one_line(capsys, ["summary", "--arch", "257,8", "--input-size", "32"])
    deep = ";".join(["1,8"] * 30)  # a layer output of 2**63 values: past every framework's tensor index
    err = one_line(capsys, ["summary", "--arch", deep, "--input-size", 2**30])
    assert "values per example in block1.relu1, more than the 2,147,483,647" in err
    deeper = ";".join(["1,8"] * 31)  # no input size the frameworks can index survives 31 halvings
    assert "use at most 30 blocks in --arch" in one_line(capsys, ["summary", "--arch", deeper])
    with pytest.raises(SystemExit):
        main([*train, "--epochs", "9" * 20])
    assert "--epochs: must be at most 2,147,483,647" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="num_epochs must be a whole number from 0 to 2,147,483,647"):
        torch.train(torch.vgg(**TINY), [], [], num_epochs=10**20, lr=0.1)  # refused before the data is looked at
    with pytest.raises(ConfigError, match="at most 2,147,483,647"):
        torch.vgg(arch=((1, 10**20),), input_size=32)
    with pytest.raises(SystemExit):
        main([*train, "--workers", "2", "--port", "99999"])
    assert "a port is at most 65535" in capsys.readouterr().err
    assert "--port is the first of the workers' ports" in one_line(capsys, [*train, "--port", "5000"])
    err = one_line(capsys, ["evaluate", tmp_path / "m.onnx", "--device", "cuda"])
    assert "runs in ONNX Runtime on the CPU" in err
    src = torch.save_weights(torch.vgg(**TINY), tmp_path / "w.npz")
    err = one_line(capsys, ["convert", src, tmp_path / "m.onnx", "--batch", "1000000000"])
    assert "needs at least" in err and not (tmp_path / "m.onnx").exists()


def test_a_bad_number_in_the_environment_is_one_line(capsys, monkeypatch):
    for name in ("VGG_PROGRESS_EVERY", "VGG_DIST_TIMEOUT"):
        for value in ("abc", "-1", "nan"):
            monkeypatch.setenv(name, value)
            err = one_line(capsys, ["summary", "--backends", "torch", "--input-size", "32"])
            assert f"{name}={value!r}: give a number of seconds >" in err
        monkeypatch.delenv(name)


def test_a_deleted_working_folder_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    command = f"cd {gone} && rmdir {gone} && exec {sys.executable} -P -m common.cli convert m.pt out.npz"
    done = subprocess.run(["bash", "-c", command], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "error: the working folder was deleted; change to a folder that exists (cd) and run it again\n"
    )


# --- TensorFlow's start-up notices stay out of the command's output ------------------------------------------------


SUMMARY_TF = ["summary", "--backends", "tf", "--arch", "vgg11", "--ratio", "8", "--input-size", "32"]


def test_tensorflow_start_up_notices_are_hidden_unless_verbose(tf_backend):
    env = {**THREADS, "TF_CPP_MIN_LOG_LEVEL": None}  # as a user's shell has it
    quiet = run_vgg(*SUMMARY_TF, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if "oneDNN" in line or "absl" in line], quiet.stderr
    loud = run_vgg(*SUMMARY_TF, "--verbose", env=env, timeout=120)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "absl::InitializeLog" in loud.stderr  # what TensorFlow 2.21 prints before its logging starts


def test_the_log_level_hides_only_the_lines_below_it(tf_backend):
    import vgg_tf

    info = "I0000 00:00:1795738919.618608    1041 port.cc:153] oneDNN custom operations are on."
    warning = "W0000 00:00:1795738919.618608    1041 x.cc:1] a warning"
    preamble = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    assert [vgg_tf._hidden(line, 1) for line in (info, warning, preamble, "Traceback (most recent call last):")] == [
        True,
        False,
        True,
        False,
    ]
    assert vgg_tf._hidden(warning, 2) and not vgg_tf._hidden(info, 0) and not vgg_tf._hidden(preamble, 0)
