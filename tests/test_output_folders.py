"""The folders a command writes: locked and checked before its first step, never holding parts of two runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
from conftest import load_backend
from helpers import ONE_OMP_THREAD, TINY_CLI, run_vgg, start_vgg

from common.checkpoint import FILE_NAME, FolderLock, read_checkpoint_meta
from common.cli import main

RUN = ["train", "--backend", "torch", *TINY_CLI, "--batch-size", "64", "--train-limit", "128", "--test-limit", "64"]


@pytest.fixture(autouse=True)
def _torch():
    load_backend("torch")


def _refused(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_compare_locks_every_backends_folder_before_its_first_run(tmp_path):
    """Issue 29, item 1: a `vgg train` into the folder of a backend the compare has not reached is refused at once."""
    args = ["compare", "--backends", "torch,mxnet", *TINY_CLI, "--epochs", "3", "--train-limit", "20000"]
    proc = start_vgg(*args, "--test-limit", "64", "--out", tmp_path, env=ONE_OMP_THREAD, own_group=True)
    try:
        deadline = time.monotonic() + 60
        while "PyTorch" not in proc.stdout.readline():  # the compare has begun its first run
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        theirs = run_vgg(*RUN, "--backend", "mxnet", "--epochs", "1", "--seed", "7", "--out", tmp_path / "mxnet")
        assert proc.poll() is None  # the compare still runs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert theirs.returncode == 2 and theirs.stderr.count("\n") == 1, theirs.stderr
    assert f"{tmp_path / 'mxnet'} is in use by another run (pid {proc.pid})" in theirs.stderr
    assert not (tmp_path / "mxnet" / FILE_NAME).exists()


def test_a_compare_refuses_a_foreign_run_in_a_later_backends_folder_before_any_run(tmp_path, capsys):
    assert main([*RUN, "--epochs", "0", "--out", str(tmp_path / "mxnet")]) == 0
    capsys.readouterr()
    before = (tmp_path / "mxnet" / "weights.npz").read_bytes()
    err = _refused(capsys, "compare", "--backends", "torch,mxnet", *TINY_CLI, "--out", tmp_path)
    assert f"{tmp_path / 'mxnet'} holds files vgg compare did not write" in err
    assert not (tmp_path / "torch").exists()  # refused before its first run, which left nothing
    assert (tmp_path / "mxnet" / "weights.npz").read_bytes() == before


def test_an_interrupted_overwrite_never_leaves_parts_of_two_runs(tmp_path):
    """Issue 29, item 2: the earlier run stays whole until the new one saves its first epoch, then goes whole."""
    out = tmp_path / "run"
    assert run_vgg(*RUN, "--epochs", "1", "--out", out, env=ONE_OMP_THREAD).returncode == 0
    earlier = read_checkpoint_meta(out)["run"]
    assert json.loads((out / "history.json").read_text())["run"] == earlier
    args = ["--ratio", "4", "--epochs", "3", "--train-limit", "4096", "--out", out, "--overwrite"]
    proc = start_vgg(*RUN, *args, env=ONE_OMP_THREAD)
    try:
        for line in proc.stdout:  # Ctrl-C in epoch 2, once the new run's epoch 1 is saved
            if "epoch 1, loss" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "epoch 1 of 3 is saved" in err, err
    meta = read_checkpoint_meta(out)
    assert meta["run"] != earlier and meta["config"]["ratio"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name != FolderLock.NAME) == [FILE_NAME]
    done = run_vgg("evaluate", out / "model.pt", "--test-limit", "64")
    assert done.returncode != 0 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_a_reader_refuses_a_file_of_another_run_in_a_runs_folder(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    for out, seed in ((first, "1"), (second, "2")):
        assert main([*RUN, "--epochs", "1", "--seed", seed, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(second / "model.pt"), "--test-limit", "64"]) == 0  # its own run's: read
    shutil.copy(first / "model.pt", second / "model.pt")  # what a replaced run stopped partway had left
    for command in (["evaluate", second / "model.pt"], ["convert", second / "model.pt", tmp_path / "x.npz"]):
        err = _refused(capsys, *command)
        assert f"{second / 'model.pt'} is not the file the run recorded in" in err and "parts of two runs" in err
    shutil.copy(first / FILE_NAME, second / FILE_NAME)
    err = _refused(capsys, "evaluate", second / "weights.npz", "--backend", "torch")
    assert f"{second / FILE_NAME} is of another run than" in err


def test_a_refused_train_leaves_no_folder_behind(tmp_path, capsys):
    """Issue 29, item 20: a bad number is refused, and the folder the command had made goes with it."""
    out = tmp_path / "new" / "run"
    err = _refused(capsys, *RUN, "--lr", "1e39", "--out", out)
    assert "lr must be a positive number" in err
    assert not (tmp_path / "new").exists()


def test_a_lock_file_that_is_a_named_pipe_is_one_line(tmp_path, capsys):
    """Issue 29, item 9."""
    os.mkfifo(tmp_path / FolderLock.NAME)
    err = _refused(capsys, *RUN, "--epochs", "1", "--out", tmp_path)
    assert f"{tmp_path / FolderLock.NAME} is not a regular file (a named pipe or a device)" in err


def test_a_conform_report_folder_is_locked_while_it_is_written(tmp_path, capsys):
    with FolderLock(tmp_path):
        err = _refused(capsys, "conform", tmp_path / "model.onnx", "--out", tmp_path)
    assert f"{tmp_path} is in use by another run (pid {os.getpid()})" in err


def test_an_overwrite_without_epochs_replaces_the_earlier_run_whole(tmp_path, capsys):
    assert main([*RUN, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert main([*RUN, "--epochs", "0", "--seed", "5", "--out", str(tmp_path), "--overwrite"]) == 0
    capsys.readouterr()
    assert not (tmp_path / FILE_NAME).exists()  # the earlier run's checkpoint went with its other files
    assert main(["evaluate", str(tmp_path / "model.pt"), "--test-limit", "64"]) == 0
    assert json.loads((tmp_path / "history.json").read_text())["seed"] == 5
