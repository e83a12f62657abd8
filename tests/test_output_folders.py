"""Output folders and files: `vgg train --out` and the compare folder are checked before any work, locked while a
run writes, and never replaced without --overwrite; nor is a converted model, a bench's --json or a report.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend
from helpers import (
    ONE_OMP_THREAD,
    SHORT_RUN,
    TINY,
    TINY_CLI,
    one_line,
    run_in_process,
    run_main,
    run_python,
    run_vgg,
    saved_small_network,
    start_vgg,
    untrained_checkpoint,
)

from common.arch import make_config
from common.checkpoint import FILE_NAME, FolderLock, read_checkpoint_meta
from common.cli import main
from common.errors import ConfigError
from common.files import TargetAppeared, atomic_write
from common.interchange import read_model, save_weights_file
from common.weights import xavier_init

RUN = ["train", "--backend", "torch", *TINY_CLI, "--batch-size", "64", "--train-limit", "128", "--test-limit", "64"]


def _refused(capsys, *argv):
    rc = main([*RUN, *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the runs' lock files (empty, left by each run)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".vgg.lock"]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --- the --out folder of vgg train ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["a file", "/dev/null", "/proc/x"])
@pytest.mark.usefixtures("torch_backend")
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, target):
    out = tmp_path / "file.txt" if target == "a file" else Path(target)
    if target == "a file":
        out.write_text("keep me")
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert str(out) in err and ("is a file, not a folder" in err or "cannot write in" in err)
    if target == "a file":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("link", ["loop", "dangling"])
@pytest.mark.usefixtures("torch_backend")
def test_an_out_that_is_a_link_to_nowhere_says_so(tmp_path, capsys, link):
    out = tmp_path / "out"
    out.symlink_to(out if link == "loop" else tmp_path / "gone")
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert "is a symbolic link that leads nowhere (its target is missing, or it loops)" in err
    assert out.is_symlink() and not (tmp_path / "gone").exists()


@pytest.mark.usefixtures("torch_backend")
def test_an_out_folder_that_cannot_be_written_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what a read-only folder answers (root ignores modes)
    err = _refused(capsys, "--epochs", "1", "--out", str(tmp_path))
    assert f"cannot write in {tmp_path} (Permission denied)" in err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_where_a_run_saves_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "weights.npz").mkdir()
    err = one_line(capsys, ["train", "--backend", "torch", *TINY_CLI, "--out", tmp_path, "--overwrite"])
    assert "weights.npz is a folder, where the run saves a file of that name" in err
    assert {p.name for p in tmp_path.iterdir()} <= {"weights.npz", ".vgg.lock"} and not any(
        (tmp_path / "weights.npz").iterdir()
    )


@pytest.mark.usefixtures("torch_backend")
def test_any_file_of_a_run_counts_as_a_saved_run(tmp_path, capsys):
    (tmp_path / "weights.npz").write_bytes(b"saved weights")
    err = _refused(capsys, "--epochs", "0", "--out", str(tmp_path))
    assert "already holds a run's files (weights.npz)" in err and "--overwrite" in err
    assert (tmp_path / "weights.npz").read_bytes() == b"saved weights"


def test_a_new_run_never_overwrites_a_saved_one(tmp_path, capsys):
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    before = path.read_bytes()
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), *SHORT_RUN])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"{tmp_path} already holds a run (checkpoint.npz: epoch 1 of 2); continue it with --resume" in err
    assert path.read_bytes() == before  # untouched
    with pytest.raises(SystemExit) as stop:
        main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--overwrite"])
    assert stop.value.code == 2 and "--overwrite: not allowed with argument --resume" in capsys.readouterr().err


@pytest.mark.usefixtures("torch_backend")
def test_a_run_without_epochs_says_only_what_it_wrote(tmp_path, capsys):
    assert main([*RUN, "--epochs", "0", "--out", str(tmp_path)]) == 0
    wrote = capsys.readouterr().out.splitlines()[-1]
    assert "checkpoint.npz" not in wrote and "weights.npz" in wrote and "history.json" in wrote
    assert not (tmp_path / "checkpoint.npz").exists()


def test_train_never_writes_its_checkpoint_over_a_file_that_is_none(tmp_path):
    torch = load_backend("torch")
    net = torch.vgg(**TINY)
    weights = torch.save_weights(net, tmp_path / "mine.npz")
    before = weights.read_bytes()
    train_iter, test_iter = torch.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    with pytest.raises(ConfigError, match="is there and is not a checkpoint"):
        torch.train(net, train_iter, test_iter, 1, checkpoint=weights, verbose=False)
    assert weights.read_bytes() == before
    for bad in ("", 3):
        with pytest.raises(ConfigError, match="a checkpoint is named by a folder or an .npz path"):
            torch.train(net, train_iter, test_iter, 1, checkpoint=bad, verbose=False)
    history = torch.train(net, train_iter, test_iter, np.int64(1), lr=np.float32(0.05), verbose=False)
    assert len(history.epochs) == 1  # NumPy's scalars are numbers too


# --- locks: one run writes a folder at a time ----------------------------------------------------------------------


@pytest.mark.usefixtures("torch_backend")
def test_a_second_run_on_the_same_folder_is_refused_at_once(tmp_path, capsys):
    with FolderLock(tmp_path):
        err = _refused(capsys, "--epochs", "1", "--out", str(tmp_path))
    assert f"{tmp_path} is in use by another run (pid {os.getpid()})" in err


@pytest.mark.usefixtures("torch_backend")
def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    code = (
        "import os, signal, sys; from common.checkpoint import FolderLock\n"
        f"FolderLock({str(tmp_path)!r}).__enter__(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = run_python(code, timeout=60)
    assert done.returncode == -signal.SIGKILL
    with FolderLock(tmp_path):  # taken at once: the lock went with the killed process
        pass


@pytest.mark.usefixtures("torch_backend")
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("the user's notes")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".vgg.lock").symlink_to(target)
    err = _refused(capsys, "--epochs", "1", "--out", str(out))
    assert "vgg.lock is a symbolic link, where the run keeps its lock: remove it" in err
    assert target.read_text() == "the user's notes"


def test_a_compare_folder_in_use_is_refused_whatever_the_backends(tmp_path, capsys):
    from common.checkpoint import FolderLock

    with FolderLock(tmp_path):  # as a compare of other backends running there holds it
        err = one_line(capsys, ["compare", "--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", tmp_path])
    assert "is in use by another run" in err and not (tmp_path / "mxnet").exists()


# --- the compare folder --------------------------------------------------------------------------------------------


def test_compare_refuses_what_its_runs_would_before_it_starts_any(tmp_path, capsys, monkeypatch):
    """Each of these had started the first backend's run, which refused it: its line, then compare's "the
    torch run failed", and a compare folder left behind. A folder named like an option reached the run as one."""
    compare = ["compare", "--backends", "torch", *TINY_CLI, *"--epochs 1 --train-limit 64 --test-limit 32".split()]
    for extra, says in (
        (["--lr", "nan"], "lr must be a positive number"),
        (["--seed", "-1"], "seed must be a whole number"),
        (["--data-dir", tmp_path / "none"], "none is not a folder"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--workers", "200"], "--workers 200 is more than the global batch of 128 examples"),
    ):
        assert says in one_line(capsys, [*compare, "--out", tmp_path / "c", *extra])
        assert not (tmp_path / "c").exists()
    monkeypatch.chdir(tmp_path)
    assert main([*compare, "--out", "-1"]) == 0
    assert (tmp_path / "-1" / "torch" / "history.json").is_file()


def test_a_compare_that_fails_to_resume_a_users_run_leaves_it_the_users(tmp_path, capsys):
    """compare --resume may continue a user's own `vgg train` run in OUT/torch; one it cannot continue (another
    seed here) stays the user's, so a later compare without --overwrite still refuses to replace it. The folder
    had been marked as the compare's before the run was tried."""
    load_backend("torch")
    out = tmp_path / "out"
    tiny = [*TINY_CLI, "--epochs", "1", "--train-limit", "64", "--test-limit", "32"]
    assert main(["train", "--backend", "torch", *tiny, "--seed", "1", "--out", str(out / "torch")]) == 0
    before = _digest(out)
    assert main(["compare", "--backends", "torch", *tiny, "--out", str(out), "--resume"]) == 2
    capsys.readouterr()
    err = one_line(capsys, ["compare", "--backends", "torch", *tiny, "--out", out])
    assert f"{out / 'torch'} holds files vgg compare did not write" in err
    assert _digest(out) == before


def test_compare_never_replaces_a_run_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "cmp"
    load_backend("mxnet")
    assert main(["train", "--backend", "mxnet", *TINY_CLI, "--epochs", "0", "--out", str(out / "mxnet")]) == 0
    capsys.readouterr()
    before = _digest(out)
    small = ["--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", out]
    err = one_line(capsys, ["compare", *small])
    assert f"{out / 'mxnet'} holds files vgg compare did not write; replace them with --overwrite" in err
    assert _digest(out) == before and not (out / ".vgg-compare").exists()
    (out / "results.json").write_text('{"mine": 1}')  # a user's file of that name makes the folder no compare's
    (out / "report.md").write_text("the user's notes")
    before = _digest(out)
    for resume in ([], ["--resume"]):  # --resume continues runs that have a checkpoint, and replaces nothing
        assert "holds files vgg compare did not write" in one_line(capsys, ["compare", *small, *resume])
    assert _digest(out) == before and not (out / ".vgg-compare").exists()
    assert "an empty folder name was given" in one_line(capsys, ["compare", *small[:-2], "--out", ""])
    assert "an empty folder name was given" in one_line(capsys, ["train", "--backend", "torch", "--out", ""])
    done = run_in_process(capsys, "compare", *small, "--overwrite")  # its run: a `vgg train` process
    assert done.returncode == 0, done.stderr
    assert (out / ".vgg-compare").is_file() and (out / "report.md").is_file()
    (out / ".vgg-compare").unlink()  # a compare's own results.json, from before the mark, still says so
    done = run_in_process(capsys, "compare", *small)  # its own folder now: replaced without --overwrite
    assert done.returncode == 0 and (out / ".vgg-compare").is_file(), done.stderr


# --- other files a command writes: converted models, a bench's --json, a report ------------------------------------


def test_convert_keeps_an_existing_destination_unless_told(tmp_path, capsys):
    src = saved_small_network(tmp_path)
    dst = tmp_path / "kept.pt"
    dst.write_bytes(b"the user's file")
    rc = main(["convert", str(src), str(dst), "--to", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "already exists; replace it with --overwrite" in err
    assert dst.read_bytes() == b"the user's file"
    assert main(["convert", str(src), str(dst), "--to", "torch", "--overwrite"]) == 0
    assert dst.read_bytes() != b"the user's file"


def test_convert_to_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    torch = load_backend("torch")
    src = torch.save_weights(torch.vgg(**TINY), tmp_path / "w.npz")
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "d.pt").mkdir()
    for dst, says in (
        (afile / "o.npz", "is a file, not a folder"),
        (afile / "o.onnx", "is a file, not a folder"),
        (tmp_path / "d.pt", "is a folder; name a file"),
        ("/proc/o.pt", "cannot write in /proc"),
    ):
        assert says in one_line(capsys, ["convert", src, dst, "--overwrite"])
    assert afile.read_text() == "x"


def test_bench_and_conform_keep_existing_files_and_check_paths_before_measuring(tmp_path, capsys):
    kept = tmp_path / "kept.json"
    kept.write_text("the user's numbers")
    bench = ["bench", "--backends", "torch", "--resize", "32", "--ratio", "16", "--steps", "1", "--repeats", "1"]
    err = one_line(capsys, [*bench, "--json", kept])
    assert f"{kept} already exists; replace it with --overwrite, or choose another --json" in err
    assert kept.read_text() == "the user's numbers"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file, not a folder" in one_line(capsys, [*bench, "--json", afile / "b.json"])
    assert "is a folder; name a file" in one_line(capsys, [*bench, "--json", tmp_path])
    assert "was given an empty name" in one_line(capsys, [*bench, "--json", ""])
    sweep = [*bench, "--sweep", "--sizes", "32", "--ratios", "16"]
    assert "name a .png or .pdf or .svg file" in one_line(capsys, [*sweep, "--plot", tmp_path / "p.txt"])
    report = tmp_path / "report"
    report.mkdir()
    (report / "conformance.md").write_text("the user's report")
    err = one_line(capsys, ["conform", tmp_path / "missing.onnx", "--out", report])
    assert "conformance.md already exists; replace it with --overwrite, or choose another --out" in err
    assert (report / "conformance.md").read_text() == "the user's report"


def _appears(monkeypatch, module, name: str, path: Path, text: str) -> None:
    """``module.name`` writes ``text`` to ``path`` first, then does its own work: another command's file, written
    there while this one measured."""
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        path.write_text(text)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("links", [True, False])
def test_a_file_written_without_overwrite_never_replaces_one(tmp_path, monkeypatch, links):
    """Also where the file system has no hard links (FAT: EPERM): the name is claimed before the rename."""
    if not links:

        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "w.weights.h5"
    old = os.umask(0o027)
    try:
        assert atomic_write(target, lambda f: f.write(b"first"), overwrite=False) == target
    finally:
        os.umask(old)
    assert target.read_bytes() == b"first" and target.stat().st_mode & 0o777 == 0o640  # a new file's mode
    with pytest.raises(TargetAppeared) as kept:
        atomic_write(target, lambda f: f.write(b"second"), overwrite=False)
    assert kept.value.kept == tmp_path / "w-1.weights.h5" and kept.value.kept.read_bytes() == b"second"
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1.weights.h5", "w.weights.h5"]


@pytest.mark.usefixtures("_torch")
@pytest.mark.usefixtures("one_peak_product")  # where the numbers go is under test, not the peak
def test_bench_keeps_a_json_or_plot_that_appeared_while_it_measured(tmp_path, capsys, monkeypatch):
    import common.bench

    bench = ["bench", "--backends", "torch", "--resize", "32", "--ratio", "16", "--batch-size", "16"]
    bench += ["--steps", "1", "--repeats", "1"]
    numbers = tmp_path / "bench.json"
    (tmp_path / "bench-1.json").write_text("an earlier kept file")
    _appears(monkeypatch, common.bench, "summarise", numbers, "another bench's numbers")  # after the check
    err = one_line(capsys, [*bench, "--json", numbers])
    kept = tmp_path / "bench-2.json"  # the first free name beside it
    assert f"{numbers} appeared while this command ran and is left as it was; this command's file is {kept}" in err
    assert "run again with --overwrite" in err
    assert numbers.read_text() == "another bench's numbers"
    assert (tmp_path / "bench-1.json").read_text() == "an earlier kept file"
    assert [r["backend"] for r in json.loads(kept.read_text())["runs"]] == ["torch"]  # the numbers, all there
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

    assert main([*bench, "--json", str(numbers), "--overwrite"]) == 0  # told to: replaced
    assert json.loads(numbers.read_text())["runs"][0]["backend"] == "torch"

    sweep = [*bench, "--sweep", "--sizes", "32", "--ratios", "16"]
    plot, numbers = tmp_path / "sweep.png", tmp_path / "sweep.json"
    _appears(monkeypatch, common.bench, "plot_sweep", plot, "another sweep's plot")
    assert main([*sweep, "--plot", str(plot), "--json", str(numbers)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after a line per point measured
    assert f"{plot} appeared while this command ran" in err and f"file is {tmp_path / 'sweep-1.png'}" in err
    assert plot.read_text() == "another sweep's plot"
    assert (tmp_path / "sweep-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(numbers.read_text())["plot"] == str(tmp_path / "sweep-1.png")  # the numbers name it


def test_convert_and_teach_keep_a_file_that_appeared_while_they_worked(tmp_path, capsys, monkeypatch):
    """The destination is checked first and written last: a file another command (or the user) put there in
    between is kept as it was, and this command's file beside it, said in one line (with --overwrite: replaced).
    Convert writes through any framework's saver to a name beside dst; .npz to .safetensors needs none."""
    import common.cli.convert
    import common.teach.page

    config = make_config(**TINY)
    src, dst = tmp_path / "m.npz", tmp_path / "m.safetensors"
    save_weights_file(src, config, xavier_init(config, 0), "torch", "")
    _appears(monkeypatch, common.cli.convert, "read_model", dst, "a user's file")
    err = one_line(capsys, ["convert", src, dst])
    kept = tmp_path / "m-1.safetensors"
    assert f"{dst} appeared while this command ran and is left as it was; this command's file is {kept}" in err
    assert dst.read_text() == "a user's file"
    assert read_model(kept)[0] == config  # the whole conversion, kept
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert main(["convert", str(src), str(dst), "--overwrite"]) == 0  # told to: replaced
    assert read_model(dst)[0] == config

    site = tmp_path / "site"
    site.mkdir()
    page = site / "index.html"
    _appears(monkeypatch, common.teach.page, "render", page, "a user's page")
    err = one_line(capsys, ["teach", "--out", site])
    assert f"{page} appeared while this command ran and is left as it was" in err
    assert page.read_text() == "a user's page" and (site / "index-1.html").read_text().startswith("<!DOCTYPE")


# --- every folder a command writes, locked before its first step; never parts of two runs --------------------------


@pytest.fixture
def _torch():
    load_backend("torch")


def _refused_line(capsys, *argv) -> str:
    """Run `vgg ARGV` in this process; assert it refused with one line, no traceback; the line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.usefixtures("_torch")
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


@pytest.mark.usefixtures("_torch")
def test_a_compare_refuses_a_foreign_run_in_a_later_backends_folder_before_any_run(tmp_path, capsys):
    assert main([*RUN, "--epochs", "0", "--out", str(tmp_path / "mxnet")]) == 0
    capsys.readouterr()
    before = (tmp_path / "mxnet" / "weights.npz").read_bytes()
    err = _refused_line(capsys, "compare", "--backends", "torch,mxnet", *TINY_CLI, "--out", tmp_path)
    assert f"{tmp_path / 'mxnet'} holds files vgg compare did not write" in err
    assert not (tmp_path / "torch").exists()  # refused before its first run, which left nothing
    assert (tmp_path / "mxnet" / "weights.npz").read_bytes() == before


@pytest.mark.usefixtures("_torch")
def test_an_interrupted_overwrite_never_leaves_parts_of_two_runs(tmp_path, capsys):
    """Issue 29, item 2: the earlier run stays whole until the new one saves its first epoch, then goes whole."""
    out = tmp_path / "run"
    run_main(capsys, *RUN, "--epochs", "1", "--out", out)  # the earlier run, in this process
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
    done = run_in_process(capsys, "evaluate", out / "model.pt", "--test-limit", "64")
    assert done.returncode != 0 and "does not exist" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.usefixtures("_torch")
def test_a_reader_refuses_a_file_of_another_run_in_a_runs_folder(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    for out, seed in ((first, "1"), (second, "2")):
        assert main([*RUN, "--epochs", "1", "--seed", seed, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(second / "model.pt"), "--test-limit", "64"]) == 0  # its own run's: read
    shutil.copy(first / "model.pt", second / "model.pt")  # what a replaced run stopped partway had left
    for command in (["evaluate", second / "model.pt"], ["convert", second / "model.pt", tmp_path / "x.npz"]):
        err = _refused_line(capsys, *command)
        assert f"{second / 'model.pt'} is not the file the run recorded in" in err and "parts of two runs" in err
    shutil.copy(first / FILE_NAME, second / FILE_NAME)
    err = _refused_line(capsys, "evaluate", second / "weights.npz", "--backend", "torch")
    assert f"{second / FILE_NAME} is of another run than" in err


@pytest.mark.usefixtures("_torch")
def test_a_refused_train_leaves_no_folder_behind(tmp_path, capsys):
    """Issue 29, item 20: a bad number is refused, and the folder the command had made goes with it."""
    out = tmp_path / "new" / "run"
    err = _refused_line(capsys, *RUN, "--lr", "1e39", "--out", out)
    assert "lr must be a positive number" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.usefixtures("_torch")
def test_a_lock_file_that_is_a_named_pipe_is_one_line(tmp_path, capsys):
    """Issue 29, item 9."""
    os.mkfifo(tmp_path / FolderLock.NAME)
    err = _refused_line(capsys, *RUN, "--epochs", "1", "--out", tmp_path)
    assert f"{tmp_path / FolderLock.NAME} is not a regular file (a named pipe or a device)" in err


@pytest.mark.usefixtures("_torch")
def test_a_conform_report_folder_is_locked_while_it_is_written(tmp_path, capsys):
    with FolderLock(tmp_path):
        err = _refused_line(capsys, "conform", tmp_path / "model.onnx", "--out", tmp_path)
    assert f"{tmp_path} is in use by another run (pid {os.getpid()})" in err


@pytest.mark.usefixtures("_torch")
def test_an_overwrite_without_epochs_replaces_the_earlier_run_whole(tmp_path, capsys):
    assert main([*RUN, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert main([*RUN, "--epochs", "0", "--seed", "5", "--out", str(tmp_path), "--overwrite"]) == 0
    capsys.readouterr()
    assert not (tmp_path / FILE_NAME).exists()  # the earlier run's checkpoint went with its other files
    assert main(["evaluate", str(tmp_path / "model.pt"), "--test-limit", "64"]) == 0
    assert json.loads((tmp_path / "history.json").read_text())["seed"] == 5
