"""The --out folder of vgg train: checked before any work, locked while a run writes, never replaced unasked."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import pytest
from conftest import load_backend
from helpers import ONE_OMP_THREAD, TINY_CLI, run_python, run_vgg, start_vgg

from common.checkpoint import FolderLock
from common.cli import main

RUN = ["train", "--backend", "torch", *TINY_CLI, "--batch-size", "64", "--train-limit", "128", "--test-limit", "64"]


@pytest.fixture(autouse=True)
def _torch():
    load_backend("torch")


def _refused(capsys, *argv):
    rc = main([*RUN, *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("target", ["a file", "/dev/null", "/proc/x"])
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, target):
    out = tmp_path / "file.txt" if target == "a file" else Path(target)
    if target == "a file":
        out.write_text("keep me")
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert str(out) in err and ("is a file, not a folder" in err or "cannot write in" in err)
    if target == "a file":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_an_out_that_is_a_link_to_nowhere_says_so(tmp_path, capsys, link):
    out = tmp_path / "out"
    out.symlink_to(out if link == "loop" else tmp_path / "gone")
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert "is a symbolic link that leads nowhere (its target is missing, or it loops)" in err
    assert out.is_symlink() and not (tmp_path / "gone").exists()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("the user's notes")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".vgg.lock").symlink_to(target)
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert "vgg.lock is a symbolic link, where the run keeps its lock: remove it" in err
    assert target.read_text() == "the user's notes"


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what a read-only folder answers (root ignores modes)
    err = _refused(capsys, "--epochs", "1", "--out", str(tmp_path))
    assert f"cannot write in {tmp_path} (Permission denied)" in err
    assert list(tmp_path.iterdir()) == []


def test_any_file_of_a_run_counts_as_a_saved_run(tmp_path, capsys):
    (tmp_path / "weights.npz").write_bytes(b"saved weights")
    err = _refused(capsys, "--epochs", "0", "--out", str(tmp_path))
    assert "already holds a run's files (weights.npz)" in err and "--overwrite" in err
    assert (tmp_path / "weights.npz").read_bytes() == b"saved weights"


def test_a_run_without_epochs_says_only_what_it_wrote(tmp_path, capsys):
    assert main([*RUN, "--epochs", "0", "--out", str(tmp_path)]) == 0
    wrote = capsys.readouterr().out.splitlines()[-1]
    assert "checkpoint.npz" not in wrote and "weights.npz" in wrote and "history.json" in wrote
    assert not (tmp_path / "checkpoint.npz").exists()


def test_a_second_run_on_the_same_folder_is_refused_at_once(tmp_path, capsys):
    with FolderLock(tmp_path):
        err = _refused(capsys, "--epochs", "1", "--out", str(tmp_path))
    assert f"{tmp_path} is in use by another run (pid {os.getpid()})" in err


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    code = (
        "import os, signal, sys; from common.checkpoint import FolderLock\n"
        f"FolderLock({str(tmp_path)!r}).__enter__(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = run_python(code, timeout=60)
    assert done.returncode == -signal.SIGKILL
    with FolderLock(tmp_path):  # taken at once: the lock went with the killed process
        pass


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


def test_an_interrupted_compare_says_how_to_continue_and_continues(tmp_path):
    args = ["compare", "--backends", "torch", *TINY_CLI, "--batch-size", "64", "--epochs", "3", "--train-limit", "2048"]
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
