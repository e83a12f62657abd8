"""A command stopped from outside, or whose disk or output goes away: what it keeps and what it says."""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest
from conftest import load_backend
from helpers import (
    ENV,
    ONE_OMP_THREAD,
    ROOT,
    TINY_CLI,
    interrupt_after_first_checkpoint,
    run_in_process,
    run_vgg,
    vgg_command,
)

import common.weights
from common.checkpoint import FILE_NAME, read_checkpoint_meta

RUN = ["--backend", "torch", *TINY_CLI, "--batch-size", "64", "--test-limit", "64"]


def test_a_closed_terminal_stops_a_run_as_sigterm_does(tmp_path):
    """Issue 29, item 15: SIGHUP had ended the run with 129, no line and no way on."""
    out = tmp_path / "run"
    rc, err = interrupt_after_first_checkpoint(
        out, signal.SIGHUP, *RUN, "--epochs", "3", "--train-limit", "4096", env=ONE_OMP_THREAD
    )
    assert rc == 130, err
    assert f"is saved in {out / FILE_NAME}; continue with: vgg train --backend torch --out" in err
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp.npz")] == []


def test_a_temporary_file_a_killed_run_left_is_removed_by_the_next_run(tmp_path):
    """Issue 29, item 15: a run killed while writing its checkpoint had left a temporary file for good."""
    out = tmp_path / "run"
    assert run_vgg("train", *RUN, "--epochs", "1", "--train-limit", "64", "--out", out).returncode == 0
    stale = out / f".{FILE_NAME}.k1ll3d00.tmp.npz"
    stale.write_bytes(b"half a checkpoint")
    mine = out / "notes.tmp.npz"  # a file of the user's: kept
    mine.write_bytes(b"mine")
    done = run_vgg("train", "--backend", "torch", "--out", out, "--resume", "--epochs", "2")
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
    done = run_in_process(capsys, "train", *RUN, "--epochs", "2", "--train-limit", "64", "--out", out)
    monkeypatch.undo()
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "(No space left on device); free some space there and run the command again" in done.stderr
    assert "--resume" in done.stderr and "choose another path" not in done.stderr
    assert read_checkpoint_meta(out)["epoch"] == 1
    resumed = run_in_process(capsys, "train", "--backend", "torch", "--out", out, "--resume")
    assert resumed.returncode == 0 and read_checkpoint_meta(out)["epoch"] == 2, resumed.stderr


@pytest.mark.parametrize("command", [["summary", "--input-size", "32"], ["train", *RUN, "--train-limit", "64"]])
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
