"""Interruption: Ctrl-C, SIGTERM, a killed run, a full disk, a reader that goes away or output that cannot be
written. The command stops with one line (exit 130 for Ctrl-C and SIGTERM, 141 for a closed pipe) that says what
was saved and how to go on; a file being written is removed, and the one it would replace is kept.

A run killed and resumed to the same weights: test_resume.py.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend
from helpers import (
    ENV,
    ONE_OMP_THREAD,
    ONE_THREAD,
    ROOT,
    TINY,
    TINY_CLI,
    interrupt_after_first_checkpoint,
    kill_group,
    run_in_process,
    run_vgg,
    start_vgg,
    vgg_command,
)

import common.weights
from common.backends import BACKENDS
from common.checkpoint import FILE_NAME, load_checkpoint, read_checkpoint_meta
from common.cli import main
from common.exits import LOST
from common.processes import (
    PROJECT,
    Failure,
    Process,
    _cause_first,
    child_env,
    describe_exit,
    python_module,
    run_processes,
)
from common.weights import xavier_init

RUN = ["train", "--backend", "torch", *TINY_CLI, "--batch-size", "64", "--train-limit", "128", "--test-limit", "64"]
TRAIN_ARGS = ["--backend", "torch", *TINY_CLI, "--batch-size", "64", "--test-limit", "64"]  # --train-limit of its own
# The run that Ctrl-C, SIGTERM and SIGHUP stop after its first checkpoint: epochs of 8 steps, so that the first
# checkpoint comes soon, and 19 more, so that the signal finds the run training.
TO_STOP = [*TRAIN_ARGS, "--epochs", "20", "--train-limit", "512"]


# --- Ctrl-C and SIGTERM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(tmp_path, sig):
    load_backend("torch")
    out = tmp_path / "my run"  # the hint quotes it, to be pasted as it is
    rc, err = interrupt_after_first_checkpoint(out, sig, *TO_STOP, env=ONE_THREAD)
    assert rc == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: epoch ")
    assert f"vgg train --backend torch --out '{out}' --resume" in err
    assert load_checkpoint(out, "torch").epoch >= 1


def test_ctrl_c_while_the_trained_run_is_written_says_so_and_resume_writes_it(tmp_path, capsys, monkeypatch):
    torch = load_backend("torch")
    run = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "128", "--test-limit", "64"]
    monkeypatch.setattr(torch, "save_model", lambda net, path: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main([*run, "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted while writing the trained run's files: ") and err.count("\n") == 1
    assert f"write them again with: vgg train --backend torch --out {tmp_path} --resume" in err
    monkeypatch.undo()
    assert main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume"]) == 0
    assert all((tmp_path / name).is_file() for name in ("weights.npz", "model.pt", "history.json", FILE_NAME))


@pytest.mark.usefixtures("torch_backend")
def test_an_interrupted_overwrite_does_not_describe_the_run_it_replaces(tmp_path):
    assert main([*RUN, "--epochs", "1", "--out", str(tmp_path)]) == 0
    proc = start_vgg(
        *RUN, "--epochs", "3", "--train-limit", "20000", "--out", tmp_path, "--overwrite", env=ONE_OMP_THREAD
    )
    try:
        for line in proc.stdout:  # the run has started once it prints its configuration
            if "parameters;" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "no epoch of this run finished, so nothing of it was saved" in err and "earlier run (epoch 1 of 1)" in err


@pytest.mark.usefixtures("torch_backend")
def test_an_interrupted_compare_says_how_to_continue_and_continues(tmp_path):
    args = ["compare", "--backends", "torch", *TINY_CLI, "--batch-size", "64", "--epochs", "3", "--train-limit", "1024"]
    args += ["--test-limit", "64", "--out", tmp_path]
    env = {**ONE_OMP_THREAD, "PYTHONUNBUFFERED": "1"}
    proc = start_vgg(*args, env=env, own_group=True)
    try:
        for line in proc.stdout:  # Ctrl-C, as a terminal sends it to the whole group, once epoch 1 is saved
            if "epoch 1, loss" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "continue it with the same command and --resume" in err.strip().splitlines()[-1]
    done = run_vgg(*args, "--resume", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout and "report:" in done.stdout
    epochs = json.loads((tmp_path / "torch" / "history.json").read_text())["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]


def test_ctrl_c_while_the_command_loads_is_one_line(capsys, monkeypatch):
    import common

    class Interrupted:  # Ctrl-C arriving while `vgg` imports its modules, before its own handling exists
        def find_spec(self, name, path=None, target=None):
            if name == "common.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "common.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert common.main() == 130 and capsys.readouterr().err == "interrupted\n"


def test_a_compare_whose_run_is_killed_says_so_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    load_backend("torch")  # the kernel's out-of-memory killer, say: the run itself could print nothing
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -signal.SIGKILL))
    rc = main(["compare", "--backends", "torch", *TINY_CLI, "--epochs", "0", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "error: the torch run was killed by SIGKILL; continue the comparison with the same command and" in err


# --- a write that fails halfway: a full disk, Ctrl-C inside it -----------------------------------------------------


_SAVEZ = common.weights.savez


class _FailsHalfway:
    """``common.weights.savez`` whose ``fail_at``-th call writes half the file, then fails as a full disk does."""

    def __init__(self, fail_at):
        self.fail_at, self.calls, self.first = fail_at, 0, None

    def __call__(self, file, *args, **arrays):
        self.calls += 1
        if self.calls == 1:
            self.first = {k: np.array(v) for k, v in arrays.items()}
        if self.calls < self.fail_at:
            return _SAVEZ(file, *args, **arrays)
        whole = io.BytesIO()
        _SAVEZ(whole, *args, **arrays)
        half = whole.getvalue()[: len(whole.getvalue()) // 2]
        if isinstance(file, (str, os.PathLike)):
            Path(file).write_bytes(half)
        else:
            file.write(half)
            file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_checkpoint_write_failing_halfway_keeps_the_previous_checkpoint(tmp_path, monkeypatch, name):
    b = load_backend(name)
    net = b.vgg(**TINY)
    b.import_weights(net, xavier_init(net.config, 0))
    train_iter, test_iter = b.load_data_fashion_mnist(128, resize=32, train_limit=256, test_limit=128)
    savez = _FailsHalfway(fail_at=2)  # epoch 1's checkpoint is written, epoch 2's write fails halfway
    monkeypatch.setattr(common.weights, "savez", savez)
    with pytest.raises(OSError, match="No space left on device"):
        b.train(net, train_iter, test_iter, 2, checkpoint=tmp_path, verbose=False)
    monkeypatch.undo()
    assert savez.calls == 2
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind
    kept = load_checkpoint(tmp_path, name, net.config)
    assert kept.epoch == 1 and [e.epoch for e in kept.history.epochs] == [1]
    written = {k.partition("/")[2]: v for k, v in savez.first.items() if k.startswith("weights/")}
    assert written.keys() == kept.weights.keys()
    assert all(np.array_equal(kept.weights[k], written[k]) for k in written)  # epoch 1's weights, intact
    now = b.export_weights(net)  # the network itself trained epoch 2
    assert any(not np.array_equal(now[k], written[k]) for k in written)


def test_an_interrupted_npz_write_leaves_nothing_and_prints_nothing(tmp_path, monkeypatch):
    b = load_backend("torch")
    net, unraisable, calls = b.vgg(**TINY), [], []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    real = np.lib.format.write_array

    def interrupted(*args, **kwargs):  # Ctrl-C in the third array
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        b.save_weights(net, tmp_path / "w.npz")
    del info  # the traceback held the archive: dropped now, as the command drops it after its message
    gc.collect()
    assert unraisable == [] and list(tmp_path.iterdir()) == []


def test_saving_weights_over_a_file_failing_halfway_keeps_the_old_file(tmp_path, monkeypatch, backend):
    net = backend.vgg(**TINY)
    path = tmp_path / "weights.npz"
    backend.save_weights(net, path)
    before, old = path.read_bytes(), backend.export_weights(net)
    backend.import_weights(net, xavier_init(net.config, seed=1))  # other weights, to be saved over the file
    monkeypatch.setattr(common.weights, "savez", _FailsHalfway(fail_at=1))
    with pytest.raises(OSError, match="No space left on device"):
        backend.save_weights(net, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.read_bytes() == before
    loaded = backend.export_weights(backend.load_weights(backend.vgg(**TINY), path))
    assert all(np.array_equal(loaded[k], old[k]) for k in old)


# --- output: a reader that goes away, a full device, a closed stdout -----------------------------------------------


@pytest.mark.parametrize("entry", ["console script", "module"])
def test_a_reader_that_goes_away_ends_the_command_quietly(entry):
    """`vgg summary | head -1`: the write to a closed pipe was a BrokenPipeError traceback."""
    args = ["summary", "--backends", "mxnet", "--arch", "vgg11", "--ratio", "8", "--input-size", "32"]  # quickest
    command = [str(Path(sys.executable).parent / "vgg"), *args] if entry == "console script" else vgg_command(*args)
    p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    p.stdout.close()  # the reader goes away before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == ""


@pytest.mark.parametrize("command", ["compare", "workers"])
def test_a_reader_that_goes_away_ends_compare_and_a_distributed_run_quietly(command, tmp_path):
    """`vgg compare | head -1`, `vgg train --workers 2 | head -1`: the run that lost its reader ended quietly (141),
    and compare then called it a failed run, the launcher a stopped worker with exit 1."""
    run = [*TINY_CLI, "--epochs", "2", "--train-limit", "256", "--test-limit", "32", "--out", tmp_path / "o"]
    workers = ["train", "--backend", "torch", "--workers", "2", *run]
    p = start_vgg(*(["compare", "--backends", "mxnet", *run] if command == "compare" else workers), own_group=True)
    try:
        if command == "compare":
            assert p.stdout.readline() == "== MXNet Gluon\n"  # then the run's own first line finds no reader
        p.stdout.close()
        err = p.stderr.read()
        assert p.wait(timeout=180) == 141 and err == ""
    finally:
        kill_group(p)


@pytest.mark.parametrize("args", [["--help"], ["summary", "--backends", "mxnet", "--ratio", "8", "--input-size", "32"]])
def test_output_that_cannot_be_written_is_one_line(args):
    """`vgg summary > /dev/full`: the write was an OSError traceback; `--help`'s, an error at exit (status 120)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "vgg"), *args],
            stdout=full,
            stderr=subprocess.PIPE,
            env=ENV,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr == "error: the output could not be written (No space left on device); send it where it can be\n"


def test_a_command_started_with_its_output_closed_is_refused(monkeypatch, capsys):
    """`vgg summary >&-`: Python sets sys.stdout to None, where print() writes nothing; one line and status 1
    before the command runs (issue 29, item 17; test_a_closed_stdout_is_one_line_and_status_1 runs it with stdout
    closed)."""
    import common

    monkeypatch.setattr(sys, "stdout", None)
    ran = []
    assert common.quiet_pipe(lambda: ran.append(1) or 0) == 1
    assert ran == [] and "standard output is closed" in capsys.readouterr().err


# --- a closed terminal, a killed write, a full disk, a closed stdout (issue 29) ------------------------------------


def test_a_closed_terminal_stops_a_run_as_sigterm_does(tmp_path):
    """Issue 29, item 15: SIGHUP had ended the run with 129, no line and no way on."""
    out = tmp_path / "run"
    rc, err = interrupt_after_first_checkpoint(out, signal.SIGHUP, *TO_STOP, env=ONE_OMP_THREAD)
    assert rc == 130, err
    assert f"is saved in {out / FILE_NAME}; continue with: vgg train --backend torch --out" in err
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp.npz")] == []


@pytest.mark.usefixtures("torch_backend")
def test_a_temporary_file_a_killed_run_left_is_removed_by_the_next_run(tmp_path, capsys):
    """Issue 29, item 15: a run killed while writing its checkpoint had left a temporary file for good. (The runs
    are commands in this process: the one that left the file is gone, and what is tested is the next.)"""
    out = tmp_path / "run"
    first = run_in_process(capsys, "train", *TRAIN_ARGS, "--epochs", "1", "--train-limit", "64", "--out", out)
    assert first.returncode == 0, first.stderr
    stale = out / f".{FILE_NAME}.k1ll3d00.tmp.npz"
    stale.write_bytes(b"half a checkpoint")
    mine = out / "notes.tmp.npz"  # a file of the user's: kept
    mine.write_bytes(b"mine")
    done = run_in_process(capsys, "train", "--backend", "torch", "--out", out, "--resume", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and mine.read_bytes() == b"mine"
    assert read_checkpoint_meta(out)["epoch"] == 2


class _DiskFull:
    """common.weights.savez that fails as a full disk does from its ``fail_at``-th call on."""

    def __init__(self, fail_at: int):
        self.fail_at, self.calls = fail_at, 0
        self.savez = common.weights.savez

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.savez(*args, **kwargs)


def test_a_full_disk_asks_for_space_and_resume_not_another_path(tmp_path, capsys, monkeypatch):
    """Issue 29, item 16: it had said "choose another path"; freeing space and --resume is what works."""
    load_backend("torch")
    out = tmp_path / "run"
    monkeypatch.setattr(common.weights, "savez", _DiskFull(fail_at=2))  # epoch 2's checkpoint finds the disk full
    done = run_in_process(capsys, "train", *TRAIN_ARGS, "--epochs", "2", "--train-limit", "64", "--out", out)
    monkeypatch.undo()
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "(No space left on device); free some space there and run the command again" in done.stderr
    assert "--resume" in done.stderr and "choose another path" not in done.stderr
    assert read_checkpoint_meta(out)["epoch"] == 1
    resumed = run_in_process(capsys, "train", "--backend", "torch", "--out", out, "--resume")
    assert resumed.returncode == 0 and read_checkpoint_meta(out)["epoch"] == 2, resumed.stderr


@pytest.mark.parametrize("command", [["summary", "--input-size", "32"], ["train", *TRAIN_ARGS, "--train-limit", "64"]])
def test_a_closed_stdout_is_one_line_and_status_1(tmp_path, command):
    """Issue 29, item 17: with stdout closed the commands had exited 0, their output lost."""
    args = [*command, "--out", tmp_path / "run"] if command[0] == "train" else command
    done = subprocess.run(
        vgg_command(*args),
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "error: the output could not be written (standard output is closed); send it where it can be "
        "(> FILE, or > /dev/null to drop it)\n"
    )
    assert not (tmp_path / "run").exists()


# --- the processes of a run, on their own (no framework: tiny Python children) ------------------------------------


def _child(index: int, code: str, role: str = "worker") -> Process:
    return Process(role, index, [sys.executable, "-c", "import os, signal, sys, time\n" + code], dict(os.environ))


def test_processes_that_all_end_with_status_0_are_no_failure():
    assert run_processes([_child(0, "pass"), _child(1, "time.sleep(0.3)")], poll=0.02) is None


@pytest.mark.parametrize(
    "codes, first, said",
    [
        # killed from outside: named, whatever the others did
        (
            ["time.sleep(30)", "os.kill(os.getpid(), signal.SIGKILL)"],
            1,
            "worker 1 of 2 (pid {pid}) was killed by SIGKILL",
        ),
        # an error of the project's own meets every worker: worker 0 says it, even when worker 1 stops first
        (["time.sleep(0.3); sys.exit(2)", "sys.exit(2)"], 0, "worker 0 of 2 (pid {pid}) stopped with exit status 2"),
        # a worker that lost its peer (LOST) names the one still in the collective
        (
            [f"sys.exit({LOST})", "time.sleep(30)"],
            0,
            "worker 1 of 2 (pid {other}) stopped answering: worker 0 waited {wait:g} s for it in a collective "
            "(VGG_DIST_TIMEOUT; raise it where a worker is only slow)",
        ),
        # every worker lost the others: none stalled
        (
            [f"sys.exit({LOST})", f"sys.exit({LOST})"],
            0,
            "the workers lost each other: worker 0 of 2 (pid {pid}) gave up on a collective after {wait:g} s "
            "(VGG_DIST_TIMEOUT; raise it where a worker is only slow)",
        ),
    ],
    ids=["killed", "own-error", "stalled", "lost"],
)
def test_processes_the_first_cause_of_a_failure_is_named_and_no_process_is_left(codes, first, said, monkeypatch):
    monkeypatch.setenv("VGG_DIST_TIMEOUT", "7")
    processes = [_child(i, code) for i, code in enumerate(codes)]
    started = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    failure = run_processes(processes, poll=0.02, settle=2.0)
    assert failure is not None and failure.process.index == first
    pids = [p.pid for p in started]
    assert failure.pid == pids[first]
    assert failure.describe(2) == said.format(pid=pids[first], other=pids[1 - first], wait=7)
    assert all(p.poll() is not None for p in started)  # every process ended: none left running


def test_processes_that_stop_at_once_are_named_likeliest_cause_first():
    """Seen stopped at one poll: killed from outside, then another signal, then an error status, then a worker
    that lost its peers; a worker before a server; then by index."""
    stopped = [
        (_child(0, "", "server"), 2),
        (_child(1, ""), LOST),
        (_child(2, ""), 2),
        (_child(1, ""), 2),
        (_child(3, ""), -signal.SIGABRT),
        (_child(4, ""), -signal.SIGKILL),
    ]
    ranked = sorted(stopped, key=lambda s: _cause_first(*s))
    assert [(p.role, p.index, code) for p, code in ranked] == [
        ("worker", 4, -signal.SIGKILL),
        ("worker", 3, -signal.SIGABRT),
        ("worker", 1, 2),
        ("worker", 2, 2),
        ("server", 0, 2),
        ("worker", 1, LOST),
    ]


def test_processes_describe_their_exit_by_signal_name_or_number():
    assert describe_exit(0) == "stopped with exit status 0"
    assert describe_exit(-signal.SIGTERM) == "was killed by SIGTERM"
    assert describe_exit(-100) == "was killed by signal 100"  # no signal of that number


def test_processes_a_failure_names_every_worker_that_stalled_and_any_other_process(monkeypatch):
    monkeypatch.setenv("VGG_DIST_TIMEOUT", "7")
    lost = Failure(_child(0, ""), 10, LOST, stalled=((1, 11), (2, 12), (3, 13)))
    assert lost.describe(4) == (
        "workers 1, 2 and 3 of 4 (pids 11, 12, 13) stopped answering: worker 0 waited 7 s for them in a collective "
        "(VGG_DIST_TIMEOUT; raise it where a worker is only slow)"
    )
    two = Failure(_child(0, ""), 10, LOST, stalled=((1, 11), (2, 12)))
    said = "workers 1 and 2 of 3 (pids 11, 12) stopped answering: worker 0 waited 7 s for them"
    assert two.describe(3).startswith(said)
    server = Failure(_child(0, "", "server"), 20, LOST)  # only a worker loses its peers
    assert not server.lost and server.describe(2) == "server 0 (pid 20) stopped with exit status 3"


def test_processes_a_child_runs_the_projects_modules_not_the_working_folders():
    argv, env = python_module("common.cli", "--help"), child_env(EXTRA="1")
    assert argv[:3] == [sys.executable, "-P", "-m"] and argv[3:] == ["common.cli", "--help"]
    assert env["EXTRA"] == "1" and env["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT)
