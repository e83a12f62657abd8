"""Bad input on the command line: one line on stderr that says what to change, a non-zero exit (2 for a
mistake), never a traceback; and nothing but the command's own lines (the frameworks' start-up notices hidden).

Messages that name options (the option names themselves): test_option_names.py. Where a mistake is in a file, an
output folder, a distributed run or `vgg conform`: test_files.py, test_output_folders.py, test_distributed.py,
test_conform.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_backend
from helpers import ENV, ONE_THREAD, TINY, TINY_CLI, one_line, run_in_process, run_vgg

from common.backends import BACKENDS
from common.cli import main
from common.distributed import ENGINES
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


# --- workers, user code, names and files the system refuses (issue 29) ---------------------------------------------

SMALL = [*TINY_CLI, "--epochs", "1", "--test-limit", "64"]


def _one_line(done) -> str:
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize("backend", list(ENGINES))  # a backend without an engine refuses --workers 2 itself
@pytest.mark.parametrize("limit, fix", [("129", "--train-limit 128 or --train-limit 130"), ("1", "--train-limit 2")])
def test_a_last_batch_smaller_than_the_workers_is_refused_alike_in_every_backend(tmp_path, backend, limit, fix):
    """Issue 29, items 11 and 12: refused before any worker starts (Gluon had hung, Keras printed a traceback,
    PyTorch a worker's exit status without its reason)."""
    args = ["train", "--backend", backend, *SMALL, "--workers", "2", "--train-limit", limit, "--out", tmp_path / "r"]
    err = _one_line(run_vgg(*args, timeout=120))
    assert f"--workers 2: the last batch of each epoch holds {int(limit) % 128} example(s)" in err
    assert fix in err and not (tmp_path / "r").exists()


def test_a_compare_refuses_a_last_batch_smaller_than_the_workers(tmp_path):
    done = run_vgg("compare", *SMALL, "--workers", "2", "--train-limit", "129", "--out", tmp_path / "c")
    assert "the last batch of each epoch holds 1 example(s)" in _one_line(done)
    assert not (tmp_path / "c").exists()


def test_more_workers_than_the_machine_holds_are_refused_unless_insisted(tmp_path):
    """Issue 29, item 14: the line names the most that fit; --oversubscribe starts them anyway."""
    cpus = len(os.sched_getaffinity(0))
    many = str(cpus + 1)
    args = ["train", "--backend", "torch", *SMALL, "--batch-size", "64", "--workers", many, "--out", tmp_path / "r"]
    err = _one_line(run_vgg(*args))
    assert f"--workers {many}: this machine has {cpus} CPU(s)" in err and f"give --workers {cpus}" in err
    assert "--oversubscribe" in err and not (tmp_path / "r").exists()
    insisted = run_vgg(*args, "--oversubscribe", "--sync-bn")  # past the machine's check, to the next one
    assert "--sync-bn synchronizes batch norm: add --batch-norm" in _one_line(insisted)


FACTORIES = '''
import os
import time


class Boom(BaseException):
    """No Exception: a BaseException of the user's own."""


def sleeps():
    time.sleep(3600)


def exits():
    os._exit(0)


def exits_in_forward():
    from vgg_torch import vgg

    net = vgg(ratio=8, input_size=32, fc_hidden=64)
    net.forward = lambda x: os._exit(0)
    return net


def interrupts():
    raise KeyboardInterrupt


def booms():
    raise Boom("the weights server is down")
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory) -> Path:
    """The folder of the user's module of factories."""
    folder = tmp_path_factory.mktemp("factories")
    (folder / "user_factories.py").write_text(FACTORIES)
    return folder


@pytest.mark.parametrize(
    "factory, said",
    [
        ("sleeps", "did not finish within 5 s (--timeout)"),
        ("exits", "its code ended the process (stopped with exit status 0) before the check finished"),
        ("exits_in_forward", "its code ended the process (stopped with exit status 0) before the check finished"),
        ("interrupts", "the factory user_factories:interrupts raised KeyboardInterrupt"),
        ("booms", "the factory user_factories:booms raised Boom: the weights server is down"),
    ],
)
def test_a_factorys_code_runs_in_its_own_process_and_is_reported_as_what_it_did(
    factories, factory, said, capsys, monkeypatch
):
    """Issue 29, items 8 and 13: a factory that never returns, ends the process, or raises a KeyboardInterrupt or
    a BaseException of its own is one line and exit 2 (they had been no limit, status 0 without a word, "interrupted"
    with 130, and a traceback). The command runs here; the factory, in the process `vgg conform` starts for it
    (which finds the user's module on this process's path, as on a user's)."""
    monkeypatch.syspath_prepend(str(factories))
    limit = "5" if factory == "sleeps" else "120"
    done = run_in_process(capsys, "conform", f"user_factories:{factory}", "--input-size", "32", "--timeout", limit)
    assert said in _one_line(done) and done.stdout == ""
    assert "user_factories" not in sys.modules  # the user's code never ran in this process


DATA = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    load_backend("torch")
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "0", "--train-limit", "64", "--out", out]
    assert main([str(a) for a in args]) == 0
    return out


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, saved_run, capsys):
    """Issue 29, item 4: it had been an OSError traceback (File name too long); a legal 254-byte name had been
    blamed on its folder."""
    long = "x" * 256
    train = run_in_process(capsys, "train", "--backend", "torch", *SMALL, "--out", tmp_path / long / "run")
    assert "is 256 bytes long, more than the 255 a file system takes for one name" in _one_line(train)
    for command in (
        ["evaluate", tmp_path / f"{long}.pt"],
        ["convert", tmp_path / f"{long}.npz", tmp_path / "x.npz"],
        ["conform", tmp_path / f"{long}.onnx"],
        ["convert", saved_run / "weights.npz", tmp_path / f"{'y' * 253}.npz"],
    ):
        err = _one_line(run_in_process(capsys, *command))
        assert "longer than the file system takes" in err or "more than the 255 a file system takes" in err, err
    legal = tmp_path / f"{'z' * 250}.npz"  # 254 bytes: written, its temporary name shortened to fit
    done = run_in_process(capsys, "convert", saved_run / "weights.npz", legal)
    assert done.returncode == 0 and legal.is_file(), done.stderr


def test_mxnet_refuses_a_path_that_is_not_utf8_before_training(tmp_path):
    """Issue 29, item 5: MXNet trained an epoch, then failed in its C string conversion, for good."""
    out = os.fsdecode(bytes(tmp_path) + b"/bad\xfdmx")
    err = _one_line(run_vgg("train", "--backend", "mxnet", *SMALL, "--train-limit", "64", "--out", out))
    assert "is not valid UTF-8, and MXNet reads and writes only paths that are" in err
    assert list(tmp_path.iterdir()) == []  # refused before its first step: the folder it made is gone


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_warnings_made_errors_leave_the_frameworks_loading(backend):
    """Issue 29, item 10: a framework's DeprecationWarning at import had been a traceback."""
    done = run_vgg("summary", "--backends", backend, "--input-size", "32", env={"PYTHONWARNINGS": "error"})
    assert done.returncode == 0 and "agree with the spec" in done.stdout, done.stderr


def test_files_that_are_no_files_say_what_they_are(tmp_path, capsys):
    """Issue 29, item 18: a zero-byte .onnx had been "not one of this project's", a pipe or a link to a device
    among the data files "missing", and --out under a link to nowhere "(File exists)"."""
    load_backend("torch")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    assert "is empty (0 bytes), not an ONNX model" in _one_line(run_in_process(capsys, "evaluate", empty))
    for make in (lambda p: os.mkfifo(p), lambda p: p.symlink_to("/dev/zero")):
        data = tmp_path / f"data{len(list(tmp_path.iterdir()))}"
        data.mkdir()
        for f in DATA.iterdir():
            (data / f.name).symlink_to(f)
        (data / "t10k-labels-idx1-ubyte.gz").unlink()
        make(data / "t10k-labels-idx1-ubyte.gz")
        done = run_in_process(capsys, "train", "--backend", "torch", *SMALL, "--train-limit", "64", "--data-dir", data)
        err = _one_line(done)
        assert f"{data / 't10k-labels-idx1-ubyte.gz'} is not a regular file (a named pipe or a device?)" in err
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    done = run_in_process(capsys, "train", "--backend", "torch", *SMALL, "--out", tmp_path / "gone" / "run")
    assert f"{tmp_path / 'gone'} is a symbolic link that leads nowhere" in _one_line(done)


def test_a_workers_own_error_line_reaches_the_user(monkeypatch, capsys):
    """Issue 29, item 11: a worker other than worker 0 keeps its error line for the launcher, which prints it where
    that worker stopped the run (PyTorch had said only "worker 1 of 2 … stopped with exit status 2"). Only worker 1
    is given a bad rate here, as only one worker meets an error of its own (its device, its data)."""
    from common import distributed

    real = distributed.plan

    def plan(backend, argv, workers, port=None):
        processes = real(backend, argv, workers, port)
        processes[1].argv = [*processes[1].argv, "--lr", "1e39"]
        return processes

    monkeypatch.setattr(distributed, "plan", plan)
    argv = ["train", "--backend", "torch", *SMALL, "--batch-size", "64", "--train-limit", "128"]
    status = distributed.launch("torch", argv, 2)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("error: worker 1 of 2: lr must be a positive number from 1.18e-38 to 3.4e+38"), err
