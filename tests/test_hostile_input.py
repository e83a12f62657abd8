"""Hostile input found by an adversarial pass: damaged files of every format, output paths that cannot be
written or hold a user's files, numbers too large for the frameworks, empty data. Each gets the project's own
error (one line from `vgg`), and nothing a user saved is replaced."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend
from helpers import ENV, TINY, TINY_CLI, kill_group, run_vgg, start_vgg, vgg_command

from common.checkpoint import FILE_NAME, read_checkpoint_meta
from common.cli import main
from common.data import FILES, read_file
from common.errors import ConfigError, DataError, InputError, VGGError
from common.interchange import load_onnx, load_weights_file


def _one_line(capsys, argv) -> str:
    """Run `vgg ARGV` in this process; assert it refused with exit 2 and one line, no traceback; the line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the runs' lock files (empty, left by each run)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".vgg.lock"]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --- damaged files of every format ----------------------------------------------------------------------------


def _mutations(data: bytes, seed: int, n: int):
    """``n`` damaged copies of ``data``: bytes changed anywhere or in the first 2 KB (headers), cut, appended."""
    rng = random.Random(seed)
    for i in range(n):
        d = bytearray(data)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randrange(1, 20)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        elif kind == 1:
            for _ in range(rng.randrange(1, 8)):
                d[rng.randrange(min(len(d), 2048))] = rng.randrange(256)
        elif kind == 2:
            d = d[: rng.randrange(len(d))]
        else:
            d += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        yield bytes(d)


def _saved_files(tmp_path):
    """A small network saved in every format the project reads, with the function that reads each."""
    torch, tf, mxnet = (load_backend(n) for n in ("torch", "tf", "mxnet"))
    net = torch.vgg(**TINY)
    files = {
        "pt": (torch.save_model(net, tmp_path / "m.pt"), torch.load_model),
        "npz": (torch.save_weights(net, tmp_path / "m.npz"), load_weights_file),
        "safetensors": (torch.save_weights(net, tmp_path / "m.safetensors"), load_weights_file),
        "onnx": (torch.export_onnx(net, tmp_path / "m.onnx"), load_onnx),
    }
    weights = torch.export_weights(net)
    files["weights.h5"] = (
        tf.save_model(tf.import_weights(tf.vgg(**TINY), weights), tmp_path / "m.weights.h5"),
        tf.load_model,
    )
    files["params"] = (
        mxnet.save_model(mxnet.import_weights(mxnet.vgg(**TINY), weights), tmp_path / "m.params"),
        mxnet.load_model,
    )
    return files


# Damage the adversarial pass found to escape as a traceback, one per format, beside the random damage.
KNOWN_DAMAGE = {
    "pt": lambda d: b"hello world\n",  # the unpickler's KeyError
    "params": lambda d: d.replace(b"block1", b"\xffbloc", 1),  # a name that does not decode
    "weights.h5": lambda d: d[:6000] + bytes(2048) + d[8048:],  # h5py's "wrong B-tree signature"
    "onnx": lambda d: d[: d.find(b"Conv")] + b"\xaf" + d[d.find(b"Conv") + 1 :],  # the checker's UnicodeDecodeError
}


def test_every_format_damaged_at_random_is_refused_by_the_projects_own_error(tmp_path):
    files = _saved_files(tmp_path)
    for fmt, (path, read) in files.items():
        original = Path(path).read_bytes()
        damaged = [KNOWN_DAMAGE[fmt](original)] if fmt in KNOWN_DAMAGE else []
        damaged += list(_mutations(original, seed=len(fmt), n=16))
        escaped = []
        for i, data in enumerate(damaged):
            bad = tmp_path / f"bad{i}{Path(path).name[1:]}"
            bad.write_bytes(data)
            try:
                read(bad)
            except VGGError:
                pass
            except Exception as e:  # noqa: BLE001 - what this test looks for
                escaped.append(f"{fmt} #{i}: {type(e).__name__}: {e}")
            bad.unlink()
        assert not escaped, escaped


def _one_epoch_run(tmp_path, capsys) -> tuple[Path, list[str]]:
    """A PyTorch run of one short epoch saved in ``tmp_path/run``; the folder and the command without --out."""
    load_backend("torch")
    run = tmp_path / "run"
    argv = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--test-limit", "64"]
    assert main([*argv, "--out", str(run)]) == 0
    capsys.readouterr()
    return run, argv


def test_a_damaged_checkpoint_is_one_line_with_or_without_resume(tmp_path, capsys):
    run, argv = _one_epoch_run(tmp_path, capsys)
    ckpt = run / FILE_NAME
    read_checkpoint_meta(ckpt)
    data = ckpt.read_bytes()
    assert b"'shape': (), }" in data
    ckpt.write_bytes(data.replace(b"'shape': (), }", b"'shape': ((, }", 1))  # NumPy's header parser: TokenError
    err = _one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume"])
    assert "is not a readable checkpoint (TokenError" in err
    err = _one_line(capsys, [*argv, "--out", run])
    assert "already holds a run whose checkpoint.npz cannot be read; replace the run with --overwrite" in err


def test_files_that_are_not_what_their_name_says(tmp_path, capsys):
    (tmp_path / "d.pt").mkdir()
    assert "d.pt is a folder, not a file" in _one_line(capsys, ["evaluate", tmp_path / "d.pt"])
    os.mkfifo(tmp_path / "pipe.npz")  # read, it would wait for a writer
    assert "pipe.npz is not a regular file" in _one_line(capsys, ["evaluate", tmp_path / "pipe.npz"])
    text = tmp_path / "t.npz"
    text.write_text("not an archive")
    err = _one_line(capsys, ["evaluate", text, "--backend", "torch"])
    assert "is not an .npz file (not a zip archive)" in err
    keras_file = tmp_path / "m.keras"
    keras_file.write_text("not an archive")
    load_backend("tf")
    rc = main(["conform", str(keras_file)])
    err = capsys.readouterr().err
    assert rc == 2 and "(not a .keras file: no zip archive)" in err and "not found" not in err


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("dropout", 5.0, "dropout must be a probability in [0, 1) that float32 holds"),  # a traceback in PyTorch
        ("input_size", -32, "input_size must be a positive integer"),  # convert wrote a .pt no loader takes
        ("arch", "vgg16", "a record of arch 'vgg16' at ratio 8 whose blocks are not that arch's"),  # taken as VGG-16
        ("ratio", 0, "ratio must be a positive integer"),
    ],
)
def test_a_configuration_record_altered_in_a_file_is_refused_as_damaged(tmp_path, capsys, field, value, says):
    """A record is checked as vgg() checks its arguments, and its blocks must be the ones its arch builds."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    torch = load_backend("torch")
    good = torch.save_weights(torch.vgg(**TINY), tmp_path / "w.safetensors")
    with safe_open(str(good), "np") as f:
        meta = f.metadata()
    meta["config"] = json.dumps({**json.loads(meta["config"]), field: value})
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta)
    err = _one_line(capsys, ["evaluate", bad, "--backend", "torch", "--test-limit", "8"])
    assert f"bad.safetensors has a damaged configuration record ({says}" in err
    assert "--" not in err  # the file's values are named as recorded, not as options
    assert says in _one_line(capsys, ["convert", bad, tmp_path / "m.pt"])
    assert not (tmp_path / "m.pt").exists()


def test_a_checkpoint_with_an_altered_configuration_is_named_on_resume(tmp_path, capsys):
    load_backend("torch")
    run = tmp_path / "run"
    assert (
        main(["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--out", str(run)]) == 0
    )
    capsys.readouterr()
    with np.load(run / FILE_NAME, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta["config"]["input_size"] = -32
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(run / FILE_NAME, **arrays)
    err = _one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume"])
    assert f"{run / FILE_NAME} has a damaged configuration record (input_size must be" in err  # it had said --resize


def _altered(source: Path, folder: Path, meta_change=None, arrays_change=None) -> Path:
    """A copy of the checkpoint ``source`` in ``folder``, its record or arrays changed as a hand or a tool might."""
    with np.load(source, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    if meta_change:
        meta_change(meta)
    if arrays_change:
        arrays_change(arrays)
    folder.mkdir()
    np.savez(folder / FILE_NAME, __meta__=np.array(json.dumps(meta)), **arrays)
    return folder


def _first(arrays: dict, prefix: str) -> str:
    return next(k for k in sorted(arrays) if k.startswith(prefix))


CHECKPOINT_DAMAGE = {
    "recipe": (lambda m: m["recipe"].update(lr="abc"), None, "has a damaged recipe record (lr must be"),
    "backend": (lambda m: m.update(backend=["torch"]), None, "backend ['torch'] is none of torch, tf, mxnet"),
    "history": (lambda m: m["history"].update(epochs=[]), None, "0 epochs recorded, after epoch 1"),
    "state": (lambda m: m["state"].update(data_epoch="x"), None, "the data stream's epoch is 'x'"),
    "slot missing": (
        None,
        lambda a: a.pop(_first(a, "optimizer/")),
        "optimizer state is not this network's: 1 missing",
    ),
    "slot reshaped": (
        None,
        lambda a: a.update({_first(a, "optimizer/"): np.zeros(3, np.float32)}),
        "optimizer state is not this network's: ",
    ),
    "slot complex": (  # cast by PyTorch with a warning, discarding the imaginary part; refused by Gluon's copy
        None,
        lambda a: a.update({_first(a, "optimizer/"): a[_first(a, "optimizer/")].astype(np.complex64)}),
        "optimizer state is not this network's: ",
    ),
    "slot nan": (
        None,
        lambda a: a.update(
            {k: np.full_like(v, np.nan) for k, v in a.items() if k.startswith("optimizer/") and v.dtype.kind == "f"}
        ),
        "NaN or infinite values (as float32) in the optimizer state of",
    ),
    "rng missing": (None, lambda a: a.pop(_first(a, "rng/")), "random-generator state is not this network's"),
}


@pytest.mark.parametrize("backend_name", ["torch", "tf", "mxnet"])
def test_a_checkpoint_altered_in_its_record_or_arrays_is_one_line_before_training(tmp_path, capsys, backend_name):
    """Each value of the record is checked as train() checks it, and the optimizer's and random generators'
    arrays must be the names and shapes the resuming run keeps; they had escaped as KeyError, RuntimeError,
    ValueError tracebacks from the frameworks, or resumed silently from another state."""
    load_backend(backend_name)
    run = tmp_path / "run"
    train = ["train", "--backend", backend_name, *TINY_CLI, "--train-limit", "64", "--test-limit", "32"]
    assert main([*train, "--epochs", "1", "--optimizer", "adam", "--lr", "0.001", "--out", str(run)]) == 0
    capsys.readouterr()
    for name, (meta_change, arrays_change, says) in CHECKPOINT_DAMAGE.items():
        if name == "rng missing" and backend_name == "mxnet":
            continue  # Gluon's dropout is reseeded from (seed, epoch): its checkpoints keep no generator state
        folder = _altered(run / FILE_NAME, tmp_path / name.replace(" ", "_"), meta_change, arrays_change)
        err = _one_line(capsys, ["train", "--backend", backend_name, "--out", folder, "--resume", "--epochs", "2"])
        assert says in err and str(folder / FILE_NAME) in err, (name, err)
        assert not (folder / "history.json").exists()  # refused before any epoch


def test_a_keras_weights_file_naming_data_in_another_file_is_refused_with_the_cause(tmp_path, capsys):
    """HDF5 can keep a dataset's bytes in any other file (external storage); Keras refuses it, and the line
    says so (it had stopped at Keras' "Example error message for object <Conv2D ...>:")."""
    import h5py

    tf = load_backend("tf")
    path = tf.save_model(tf.vgg(**TINY), tmp_path / "m.weights.h5")
    (tmp_path / "other.bin").write_bytes(bytes(range(256)))
    with h5py.File(path, "a") as f:
        names: list[str] = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = next(n for n in names if f[n].ndim == 1)
        shape, dtype = f[name].shape, f[name].dtype
        del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(tmp_path / "other.bin"), 0, 4 * shape[0])])
    err = _one_line(capsys, ["evaluate", path, "--test-limit", "8"])
    assert "Not allowed: H5 file with external Dataset" in err


def _claiming(source: Path, target: Path, member: str, shape: tuple) -> Path:
    """A copy of the .npz ``source`` whose array ``member`` has a header claiming ``shape`` (float32) and 64
    bytes of data: what numpy allocates before it reads."""
    import io
    import zipfile

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == f"{member}.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
                data = header.getvalue() + bytes(64)
            out.writestr(info.filename, data)
    return target


def test_an_npz_array_claiming_more_than_it_holds_is_refused_before_numpy_allocates_it(tmp_path, capsys):
    """numpy makes the array an .npy header describes before reading it: a 37 GiB claim in 192 bytes was a
    MemoryError traceback from evaluate, convert and resume."""
    load_backend("torch")
    run = tmp_path / "run"
    assert (
        main(["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--out", str(run)]) == 0
    )
    capsys.readouterr()
    bomb = _claiming(run / "weights.npz", tmp_path / "bomb.npz", "fc1.weight", (100_000, 100_000))
    says = "its array fc1.weight is declared (100000, 100000) of float32, but the configuration recorded in the file"
    assert says in _one_line(capsys, ["evaluate", bomb, "--backend", "torch", "--test-limit", "8"])
    assert says in _one_line(capsys, ["convert", bomb, tmp_path / "m.pt"])
    (tmp_path / "resumed").mkdir()
    _claiming(run / FILE_NAME, tmp_path / "resumed" / FILE_NAME, "weights/fc1.weight", (100_000, 100_000))
    err = _one_line(capsys, ["train", "--backend", "torch", "--out", tmp_path / "resumed", "--resume", "--epochs", "2"])
    assert "its array weights/fc1.weight is declared (100000, 100000)" in err


DEEP = "[" * 100_000 + "]" * 100_000  # JSON arrays nested past Python's recursion limit


def test_json_nested_past_pythons_limit_is_damage_not_a_recursion_error(tmp_path, capsys):
    """json.loads raises RecursionError (a RuntimeError) on deep nesting, which every reader of a file's JSON
    (metadata of .npz, .safetensors and checkpoints, a Gluon symbol file) had let through as a traceback."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    torch, mxnet = load_backend("torch"), load_backend("mxnet")
    import mxnet as mx

    net = torch.vgg(**TINY)
    good = torch.save_weights(net, tmp_path / "w.safetensors")
    with safe_open(str(good), "np") as f:
        meta = f.metadata()
    save_file(load_file(str(good)), str(tmp_path / "deep.safetensors"), metadata={**meta, "config": DEEP})
    err = _one_line(capsys, ["evaluate", tmp_path / "deep.safetensors", "--backend", "torch"])
    assert "deep.safetensors has damaged metadata (config: '[[[" in err
    with np.load(torch.save_weights(net, tmp_path / "w.npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "deep.npz", **{**arrays, "__meta__": np.array(DEEP)})
    err = _one_line(capsys, ["evaluate", tmp_path / "deep.npz", "--backend", "torch"])
    assert "deep.npz has unreadable metadata (maximum recursion depth exceeded" in err
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / FILE_NAME, **{**arrays, "__meta__": np.array(DEEP)})
    err = _one_line(capsys, ["train", "--backend", "torch", "--out", tmp_path / "run", "--resume"])
    assert "checkpoint.npz has unreadable metadata (maximum recursion depth exceeded" in err
    gluon = mxnet.vgg(**TINY)
    gluon.hybridize()
    gluon(mx.nd.zeros((1, 1, 32, 32)))
    gluon.export(str(tmp_path / "g"))
    (tmp_path / "g-symbol.json").write_text(DEEP)
    err = _one_line(capsys, ["conform", tmp_path / "g-symbol.json"])
    assert "is not a Gluon export MXNet can read (RecursionError: maximum recursion depth exceeded" in err


def test_an_mxnet_refusal_gives_its_cause_not_its_traceback_header(tmp_path, capsys):
    """MXNet's messages begin "Traceback (most recent call last):"; that line was all the refusal said."""
    import json

    mxnet = load_backend("mxnet")
    import mxnet as mx

    gluon = mxnet.vgg(**TINY)
    gluon.hybridize()
    gluon(mx.nd.zeros((1, 1, 32, 32)))
    gluon.export(str(tmp_path / "g"))
    symbol = json.loads((tmp_path / "g-symbol.json").read_text())
    relu = next(n for n in symbol["nodes"] if n["op"] == "Activation")
    relu.update(op="Custom", attrs={"op_type": "unregistered"})
    (tmp_path / "g-symbol.json").write_text(json.dumps(symbol))
    err = _one_line(capsys, ["conform", tmp_path / "g-symbol.json"])
    assert "Cannot find custom operator unregistered" in err


def test_onnx_weights_kept_outside_the_models_folder_are_never_read(tmp_path, capsys):
    """ONNX's external data: a file beside the model is read; one reached by ``..`` or by a link out of the
    model's folder is refused by name (ONNX follows links), and so is a missing one, by every reader."""
    onnx = pytest.importorskip("onnx", reason="ONNX is not installed (pip install -e '.[onnx]')")
    torch = load_backend("torch")
    whole = torch.export_onnx(torch.vgg(**TINY), tmp_path / "whole.onnx")
    inside = tmp_path / "model"
    inside.mkdir()
    model = onnx.load(str(whole))
    onnx.save(model, str(inside / "beside.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    x = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(load_onnx(inside / "beside.onnx")(x), load_onnx(whole)(x))
    (tmp_path / "secret.data").write_bytes((inside / "w.data").read_bytes())  # a file the model may not name
    (inside / "link.data").symlink_to(tmp_path / "secret.data")
    for location, says in (
        ("../secret.data", "'../secret.data', which is not a file in the model's folder"),
        ("link.data", "'link.data', which is not a file in the model's folder"),
        ("missing.data", "'missing.data', which is not a file in the model's folder"),
    ):
        bad = inside / f"{location.strip('./')}.onnx"
        bad.write_bytes(_relocated(onnx, inside / "beside.onnx", location))
        assert says in _one_line(capsys, ["evaluate", bad, "--test-limit", "8"])
        assert says in _one_line(capsys, ["conform", bad])


def _relocated(onnx, path: Path, location: str) -> bytes:
    """The ONNX model at ``path`` with every weight's external data moved to ``location``, as bytes."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model.SerializeToString()


def test_conform_of_a_model_too_large_to_check_is_one_line_before_any_array(tmp_path, capsys, monkeypatch):
    """A model may declare any input size; the probe images and every layer's output at that size are sized
    before they are made (a 100000-px one was a numpy MemoryError traceback), and a size past what the
    frameworks index is named as the model's, not as an option the user gave."""
    onnx = pytest.importorskip("onnx", reason="ONNX is not installed (pip install -e '.[onnx]')")
    import common.conform

    torch = load_backend("torch")
    model = onnx.load(str(torch.export_onnx(torch.vgg(**TINY), tmp_path / "m.onnx")))
    for side, name in ((64, "m64.onnx"), (2**40, "huge.onnx")):
        for axis in (2, 3):
            model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = side
        onnx.save(model, str(tmp_path / name))
    monkeypatch.setattr(common.conform, "available_memory", lambda: 2**20, raising=False)  # 1 MiB: too little
    err = _one_line(capsys, ["conform", tmp_path / "m64.onnx"])
    assert "1x64x64 in" in err and "of memory for 4 probe images and every layer's output, but 1.0 MiB" in err
    err = _one_line(capsys, ["conform", tmp_path / "huge.onnx"])
    assert "huge.onnx declares a 1x1099511627776x1099511627776 input, more than the frameworks index" in err


def test_conform_with_an_arch_but_no_convolutions_asks_for_what_it_cannot_tell(tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="ONNX is not installed (pip install -e '.[onnx]')")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((10, 784), np.float32), "W")
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 784])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    gemm = helper.make_node("Gemm", ["images", "W"], ["logits"], transB=1)
    onnx.save(helper.make_model(helper.make_graph([gemm], "g", [images], [logits], [weight])), tmp_path / "m.onnx")
    err = _one_line(capsys, ["conform", tmp_path / "m.onnx", "--arch", "vgg11"])
    assert "pass --in-channels, --num-classes, --input-size" in err


def test_a_keras_file_holding_code_is_refused_without_advice_to_run_it(tmp_path, capsys):
    """Keras' own refusal of a Lambda ends "pass safe_mode=False"; the project loads no code from a file."""
    load_backend("tf")
    import keras

    images = keras.Input((32, 32, 1))
    doubled = keras.layers.Lambda(lambda t: t * 2)(images)
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Conv2D(8, 3)(doubled)))
    keras.Model(images, logits).save(tmp_path / "lambda.keras")
    err = _one_line(capsys, ["conform", tmp_path / "lambda.keras"])
    assert "holds Python code (a Lambda layer)" in err and "common.conform.conform(model)" in err
    assert "safe_mode" not in err and "trust" not in err


# --- output paths ------------------------------------------------------------------------------------------------


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
        assert says in _one_line(capsys, [*compare, "--out", tmp_path / "c", *extra])
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
    err = _one_line(capsys, ["compare", "--backends", "torch", *tiny, "--out", out])
    assert f"{out / 'torch'} holds files vgg compare did not write" in err
    assert _digest(out) == before


def test_compare_never_replaces_a_run_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "cmp"
    load_backend("mxnet")
    assert main(["train", "--backend", "mxnet", *TINY_CLI, "--epochs", "0", "--out", str(out / "mxnet")]) == 0
    capsys.readouterr()
    before = _digest(out)
    small = ["--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", out]
    err = _one_line(capsys, ["compare", *small])
    assert f"{out / 'mxnet'} holds files vgg compare did not write; replace them with --overwrite" in err
    assert _digest(out) == before and not (out / ".vgg-compare").exists()
    (out / "results.json").write_text('{"mine": 1}')  # a user's file of that name makes the folder no compare's
    (out / "report.md").write_text("the user's notes")
    before = _digest(out)
    for resume in ([], ["--resume"]):  # --resume continues runs that have a checkpoint, and replaces nothing
        assert "holds files vgg compare did not write" in _one_line(capsys, ["compare", *small, *resume])
    assert _digest(out) == before and not (out / ".vgg-compare").exists()
    assert "an empty folder name was given" in _one_line(capsys, ["compare", *small[:-2], "--out", ""])
    assert "an empty folder name was given" in _one_line(capsys, ["train", "--backend", "torch", "--out", ""])
    done = run_vgg("compare", *small, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / ".vgg-compare").is_file() and (out / "report.md").is_file()
    (out / ".vgg-compare").unlink()  # a compare's own results.json, from before the mark, still says so
    done = run_vgg("compare", *small)  # its own folder now: replaced without --overwrite
    assert done.returncode == 0 and (out / ".vgg-compare").is_file(), done.stderr


def test_a_common_package_in_the_working_folder_is_never_imported(tmp_path):
    user = tmp_path / "common"
    user.mkdir()
    (user / "__init__.py").write_text("raise SystemExit('the user code ran')\n")
    small = ["--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", "c"]  # the quickest to start
    command = [sys.executable, "-P", "-m", "common.cli", "compare", *small]  # the `vgg` script: not the folder first
    done = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "the user code ran" not in done.stderr, done.stderr
    assert (tmp_path / "c" / "report.md").is_file()  # the compare's own `vgg train` child ran the project's code


def test_ctrl_c_while_the_command_loads_is_one_line(capsys, monkeypatch):
    import common

    class Interrupted:  # Ctrl-C arriving while `vgg` imports its modules, before its own handling exists
        def find_spec(self, name, path=None, target=None):
            if name == "common.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "common.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert common.main() == 130 and capsys.readouterr().err == "interrupted\n"


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
    before the command runs (issue 29, item 17; tests/test_interruption.py runs it with stdout closed)."""
    import common

    monkeypatch.setattr(sys, "stdout", None)
    ran = []
    assert common.quiet_pipe(lambda: ran.append(1) or 0) == 1
    assert ran == [] and "standard output is closed" in capsys.readouterr().err


def test_a_deleted_working_folder_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    command = f"cd {gone} && rmdir {gone} && exec {sys.executable} -P -m common.cli convert m.pt out.npz"
    done = subprocess.run(["bash", "-c", command], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "error: the working folder was deleted; change to a folder that exists (cd) and run it again\n"
    )


def test_a_compare_whose_run_is_killed_says_so_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    load_backend("torch")  # the kernel's out-of-memory killer, say: the run itself could print nothing
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -signal.SIGKILL))
    rc = main(["compare", "--backends", "torch", *TINY_CLI, "--epochs", "0", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "error: the torch run was killed by SIGKILL; continue the comparison with the same command and" in err


def test_bench_and_conform_keep_existing_files_and_check_paths_before_measuring(tmp_path, capsys):
    kept = tmp_path / "kept.json"
    kept.write_text("the user's numbers")
    bench = ["bench", "--backends", "torch", "--resize", "32", "--ratio", "16", "--steps", "1", "--repeats", "1"]
    err = _one_line(capsys, [*bench, "--json", kept])
    assert f"{kept} already exists; replace it with --overwrite, or choose another --json" in err
    assert kept.read_text() == "the user's numbers"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file, not a folder" in _one_line(capsys, [*bench, "--json", afile / "b.json"])
    assert "is a folder; name a file" in _one_line(capsys, [*bench, "--json", tmp_path])
    assert "was given an empty name" in _one_line(capsys, [*bench, "--json", ""])
    sweep = [*bench, "--sweep", "--sizes", "32", "--ratios", "16"]
    assert "name a .png or .pdf or .svg file" in _one_line(capsys, [*sweep, "--plot", tmp_path / "p.txt"])
    report = tmp_path / "report"
    report.mkdir()
    (report / "conformance.md").write_text("the user's report")
    err = _one_line(capsys, ["conform", tmp_path / "missing.onnx", "--out", report])
    assert "conformance.md already exists; replace it with --overwrite, or choose another --out" in err
    assert (report / "conformance.md").read_text() == "the user's report"


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
        assert says in _one_line(capsys, ["convert", src, dst, "--overwrite"])
    assert afile.read_text() == "x"


def test_a_folder_where_a_run_saves_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "weights.npz").mkdir()
    err = _one_line(capsys, ["train", "--backend", "torch", *TINY_CLI, "--out", tmp_path, "--overwrite"])
    assert "weights.npz is a folder, where the run saves a file of that name" in err
    assert {p.name for p in tmp_path.iterdir()} <= {"weights.npz", ".vgg.lock"} and not any(
        (tmp_path / "weights.npz").iterdir()
    )


# --- numbers too large, options that would be ignored ------------------------------------------------------------


def test_numbers_past_what_the_frameworks_hold_are_refused_before_any_work(tmp_path, capsys):
    torch = load_backend("torch")
    train = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64"]
    assert "float32's smallest normal and largest" in _one_line(capsys, [*train, "--lr", "1e39"])
    assert "float32's smallest normal and largest" in _one_line(capsys, [*train, "--lr", "1e-39"])  # MXNet's error
    assert "at most 2,147,483,647" in _one_line(capsys, ["summary", "--arch", "1,99999999999999999999"])
    assert "(at most 256)" in _one_line(capsys, ["summary", "--arch", "257,8", "--input-size", "32"])
    deep = ";".join(["1,8"] * 30)  # a layer output of 2**63 values: past every framework's tensor index
    err = _one_line(capsys, ["summary", "--arch", deep, "--input-size", 2**30])
    assert "values per example in block1.relu1, more than the 2,147,483,647" in err
    deeper = ";".join(["1,8"] * 31)  # no input size the frameworks can index survives 31 halvings
    assert "use at most 30 blocks in --arch" in _one_line(capsys, ["summary", "--arch", deeper])
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
    assert "--port is the first of the workers' ports" in _one_line(capsys, [*train, "--port", "5000"])
    err = _one_line(capsys, ["evaluate", tmp_path / "m.onnx", "--device", "cuda"])
    assert "runs in ONNX Runtime on the CPU" in err
    src = torch.save_weights(torch.vgg(**TINY), tmp_path / "w.npz")
    err = _one_line(capsys, ["convert", src, tmp_path / "m.onnx", "--batch", "1000000000"])
    assert "needs at least" in err and not (tmp_path / "m.onnx").exists()


def test_resume_asking_for_fewer_epochs_than_trained_says_so_before_any_work(tmp_path, capsys):
    run, _ = _one_epoch_run(tmp_path, capsys)
    err = _one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume", "--epochs", "0"])
    assert "--epochs 0: the run saved in" in err and "give --epochs 1 or more" in err


def test_the_command_that_started_a_run_resumes_it(tmp_path, capsys):
    load_backend("torch")
    run = tmp_path / "run"
    custom = ["--arch", "1,16;1,16;1,32;1,32;1,32", "--resize", "32", "--fc-hidden", "32", "--batch-size", "64"]
    command = ["train", "--backend", "torch", *custom, "--train-limit", "128", "--test-limit", "20000", "--out", run]
    assert main([*map(str, command), "--epochs", "1"]) == 0  # widths stored divided by the ratio; 10,000 tested
    first = json.loads((run / "history.json").read_text())
    assert main([*map(str, command), "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    history = json.loads((run / "history.json").read_text())
    assert len(history["history"]["epochs"]) == 2 and history["test_examples"] == 10_000
    assert history["wall_seconds"] > first["wall_seconds"] > 0  # a resumed run's time adds up its parts
    assert main([*map(str, command), "--epochs", "2", "--resume"]) == 0  # finished: its files written again
    assert json.loads((run / "history.json").read_text())["wall_seconds"] == history["wall_seconds"]
    err = _one_line(capsys, [*command, "--epochs", "3", "--resume", "--ratio", "2"])
    assert "--ratio 2 --resize 32 --fc-hidden 32 build --arch 1,8;1,8;1,16;1,16;1,16 --resize 32" in err
    assert "not the run saved in" in err and "(--arch 1,4;1,4;1,8;1,8;1,8 --resize 32 --fc-hidden 32" in err


def test_a_fashion_mnist_file_that_decompresses_to_gigabytes_is_read_only_past_its_size(tmp_path):
    name = "t10k-labels-idx1-ubyte"
    bomb = tmp_path / f"{name}.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        chunk = bytes(2**20)
        for _ in range(64):  # 64 MiB decompressed, about 64 KB on disk
            f.write(chunk)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(DataError, match=f"more than {FILES[name][0]:,} bytes decompressed"):
        read_file(bomb)


# --- the API: empty data, records, values ------------------------------------------------------------------------


def test_empty_or_used_up_data_is_an_input_error_not_a_zero(backend):
    net = backend.vgg(**TINY)
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    batch = next(iter(train_iter))
    with pytest.raises(InputError, match="the evaluation data gave no batches"):
        backend.evaluate_accuracy(net, [])
    with pytest.raises(InputError, match="the training data gave no batches in epoch 1"):
        backend.train(net, [], test_iter, 1, verbose=False)
    with pytest.raises(InputError, match="test_iter must be an iterable of"):
        backend.train(net, [batch], None, 1, verbose=False)
    with pytest.raises(InputError, match="no batches in epoch 2; .*a generator is used up after one"):
        backend.train(net, (b for b in [batch]), test_iter, 2, verbose=False)


def test_from_config_takes_a_saved_record_and_refuses_what_is_no_configuration(backend):
    net = backend.vgg(**TINY)
    again = backend.from_config(net.config.to_dict())
    assert again.config == net.config and backend.count_params(again) == backend.count_params(net)
    with pytest.raises(ConfigError, match="config must be a network's configuration"):
        backend.from_config("vgg11")
    with pytest.raises(ConfigError, match="config must be a network's configuration"):
        backend.abstract_network(None)


def test_values_that_are_no_numbers_are_refused_by_the_api(backend):
    net = backend.vgg(**TINY)
    before = backend.export_weights(net)["fc3.weight"].copy()
    with pytest.raises(ConfigError, match="value must be a finite number"):
        backend.init_weights(net, "constant", value=float("nan"))
    with pytest.raises(ConfigError, match="not finite numbers"):
        backend.init_weights(net, lambda name, shape, rng: np.full(shape, np.inf))
    np.testing.assert_array_equal(backend.export_weights(net)["fc3.weight"], before)
    with pytest.raises(ConfigError, match="a GPU's index is a whole number >= 0"):
        backend.try_gpu(-1)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        backend.FixedHiddenMLP(seed=-1)


# --- a second pass: the API's checkpoints, workers, locks, the environment, conform's factories ------------------


def _exits():
    """A factory that ends the process (``vgg conform`` must not read that as a model that conforms)."""
    raise SystemExit(0)


def test_a_factory_that_exits_is_an_error_not_a_pass(capsys):
    load_backend("torch")
    err = _one_line(capsys, ["conform", "test_hostile_input:_exits", "--input-size", "32"])
    assert "the factory test_hostile_input:_exits raised SystemExit" in err


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


def test_workers_asking_for_a_gpu_the_framework_does_not_see_are_refused(capsys):
    load_backend("tf")  # no GPU build of TensorFlow is installed here, so it sees none
    train = ["train", "--backend", "tf", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--workers", "2"]
    assert "was asked for, but TensorFlow sees 0 GPU(s)" in _one_line(capsys, [*train, "--device", "cuda"])


def test_a_compare_folder_in_use_is_refused_whatever_the_backends(tmp_path, capsys):
    from common.checkpoint import FolderLock

    with FolderLock(tmp_path):  # as a compare of other backends running there holds it
        err = _one_line(capsys, ["compare", "--backends", "mxnet", *TINY_CLI, "--epochs", "0", "--out", tmp_path])
    assert "is in use by another run" in err and not (tmp_path / "mxnet").exists()


def test_a_bad_number_in_the_environment_is_one_line(capsys, monkeypatch):
    for name in ("VGG_PROGRESS_EVERY", "VGG_DIST_TIMEOUT"):
        for value in ("abc", "-1", "nan"):
            monkeypatch.setenv(name, value)
            err = _one_line(capsys, ["summary", "--backends", "torch", "--input-size", "32"])
            assert f"{name}={value!r}: give a number of seconds >" in err
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("backend_name", "variables", "says"),
    [
        ("torch", {"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' in the environment is no whole number of at least 1"),
        ("torch", {"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5 is not one of 2 workers' (0..1)"),
        ("torch", {"WORLD_SIZE": "2", "LOCAL_RANK": "abc"}, "LOCAL_RANK='abc' in the environment"),
        ("torch", {"WORLD_SIZE": "2"}, "but MASTER_ADDR and MASTER_PORT are not set; set them as torchrun does"),
        ("tf", {"TF_CONFIG": "{bad"}, "TF_CONFIG in the environment is not TensorFlow's cluster description"),
        ("tf", {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'}, "(KeyError: 'task')"),
        ("mxnet", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "x"}, "DMLC_NUM_WORKER='x' in the environment"),
    ],
)
def test_an_engines_variable_that_is_no_run_is_one_line(capsys, monkeypatch, backend_name, variables, says):
    """A stray or mistyped engine variable (a scheduler's, a shell's) had given a ValueError, KeyError or
    JSONDecodeError traceback, or a rank past the workers had waited for peers that never come."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert says in _one_line(capsys, ["train", "--backend", backend_name, *TINY_CLI, "--epochs", "1"])


def test_a_batch_that_is_no_pair_and_a_block_too_deep_are_refused(backend):
    net = backend.vgg(**TINY)
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    x, y = next(iter(train_iter))
    with pytest.raises(InputError, match="training batch 1 of epoch 1 is a tuple that is not an"):
        backend.train(net, [(x, y, y)], test_iter, 1, verbose=False)
    with pytest.raises(InputError, match="evaluation batch 1 is a NoneType that is not an"):
        backend.evaluate_accuracy(net, [None])
    with pytest.raises(ConfigError, match=r"num_convs must be a positive integer \(at most 256\)"):
        backend.vgg_block(300, 1, 8)


def test_labels_of_another_dtype_are_counted_in_keras_and_refused_by_name_in_gluon():
    tf, mxnet = load_backend("tf"), load_backend("mxnet")
    import mxnet as mx
    import tensorflow

    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    net = tf.vgg(**TINY)
    counts = set()
    for dtype in (tensorflow.uint8, tensorflow.int32, tensorflow.int64, tensorflow.float32):
        batch = (tensorflow.constant(images), tensorflow.constant([0, 1, 2, 3], dtype=dtype))
        counts.add(tf.evaluate_accuracy(net, [batch]))
    assert len(counts) == 1  # the same count whatever the labels' dtype (Keras' loss takes them all)
    batch = (mx.nd.array(images.transpose(0, 3, 1, 2)), mx.nd.array([0, 1, 2, 3], dtype="int64"))
    with pytest.raises(InputError, match="has labels of dtype int64; give float32 class indices"):
        mxnet.evaluate_accuracy(mxnet.vgg(**TINY), [batch])
