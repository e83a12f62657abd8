"""Files: every format the project reads (.npz, .safetensors, .pt, .weights.h5, .params, .msgpack, .onnx,
checkpoints), damaged, hostile or not what its name says, is refused with the project's own error (one line from
`vgg`), and nothing in a file can run code or make the reader allocate what the file does not hold.

Fashion-MNIST's own files (IDX, gzip) are tested in test_data.py, ONNX and safetensors as formats in
test_interchange.py, the files `vgg conform` reads in test_conform.py.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend, load_optional
from helpers import (
    TINY,
    TINY_CLI,
    one_epoch_run,
    one_line,
    rewrite_meta,
    run_in_process,
    run_main,
    run_python,
    run_vgg,
    saved_small_network,
    untrained_checkpoint,
)

from common.arch import make_config
from common.backends import BACKENDS
from common.checkpoint import FILE_NAME, load_checkpoint, read_checkpoint_meta
from common.cli import main
from common.errors import VGGError, WeightsError
from common.interchange import load_onnx, load_weights_file
from common.spec import spec
from common.weights import npz_array, save_npz, xavier_init

# --- damaged files of every format ---------------------------------------------------------------------------------


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
    torch, tf, mxnet, jax = (load_backend(n) for n in ("torch", "tf", "mxnet", "jax"))
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
    files["msgpack"] = (
        jax.save_model(jax.import_weights(jax.vgg(**TINY), weights), tmp_path / "m.msgpack"),
        jax.load_model,
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
            except Exception as e:
                escaped.append(f"{fmt} #{i}: {type(e).__name__}: {e}")
            bad.unlink()
        assert not escaped, escaped


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
    err = one_line(capsys, ["evaluate", tmp_path / "deep.safetensors", "--backend", "torch"])
    assert "deep.safetensors has damaged metadata (config: '[[[" in err
    with np.load(torch.save_weights(net, tmp_path / "w.npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "deep.npz", **{**arrays, "__meta__": np.array(DEEP)})
    err = one_line(capsys, ["evaluate", tmp_path / "deep.npz", "--backend", "torch"])
    assert "deep.npz has unreadable metadata (maximum recursion depth exceeded" in err
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / FILE_NAME, **{**arrays, "__meta__": np.array(DEEP)})
    err = one_line(capsys, ["train", "--backend", "torch", "--out", tmp_path / "run", "--resume"])
    assert "checkpoint.npz has unreadable metadata (maximum recursion depth exceeded" in err
    gluon = mxnet.vgg(**TINY)
    gluon.hybridize()
    gluon(mx.nd.zeros((1, 1, 32, 32)))
    gluon.export(str(tmp_path / "g"))
    (tmp_path / "g-symbol.json").write_text(DEEP)
    err = one_line(capsys, ["conform", tmp_path / "g-symbol.json"])
    assert "is not a Gluon export MXNet can read (RecursionError: maximum recursion depth exceeded" in err


# --- files that are not what their name says -----------------------------------------------------------------------


def test_files_that_are_not_what_their_name_says(tmp_path, capsys):
    (tmp_path / "d.pt").mkdir()
    assert "d.pt is a folder, not a file" in one_line(capsys, ["evaluate", tmp_path / "d.pt"])
    os.mkfifo(tmp_path / "pipe.npz")  # read, it would wait for a writer
    assert "pipe.npz is not a regular file" in one_line(capsys, ["evaluate", tmp_path / "pipe.npz"])
    text = tmp_path / "t.npz"
    text.write_text("not an archive")
    err = one_line(capsys, ["evaluate", text, "--backend", "torch"])
    assert "is not an .npz file (not a zip archive)" in err
    keras_file = tmp_path / "m.keras"
    keras_file.write_text("not an archive")
    load_backend("tf")
    rc = main(["conform", str(keras_file)])
    err = capsys.readouterr().err
    assert rc == 2 and "(not a .keras file: no zip archive)" in err and "not found" not in err


def _evaluate(capsys, path):
    rc = main(["evaluate", str(path), "--test-limit", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01 random bytes \xff" * 10, json.dumps({"state_dict": {}}).encode(), pickle.dumps({"meta": 1})],
    ids=["empty", "random", "json", "pickle"],
)
@pytest.mark.filterwarnings("error")  # a framework's warning would be a second line beside the refusal
def test_a_pt_file_that_is_not_a_model_is_one_line_without_advice_to_run_code(tmp_path, capsys, content):
    load_backend("torch")
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    err = _evaluate(capsys, path)
    assert str(path) in err and "weights_only" not in err and "trust" not in err


@pytest.mark.parametrize(
    "content", [b"", b"\x12\x01\x00\x00\x00\x00\x00\x00garbage", b"{}"], ids=["empty", "cut", "json"]
)
def test_a_params_file_that_is_not_a_model_gives_its_reason_not_a_traceback(tmp_path, capsys, content):
    load_backend("mxnet")
    path = tmp_path / "model.params"
    path.write_bytes(content)
    err = _evaluate(capsys, path)
    assert "not a readable MXNet parameter file (" in err and "(Traceback" not in err


def test_a_checkpoint_given_to_evaluate_says_it_is_a_checkpoint(tmp_path, capsys):
    load_backend("torch")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--backend",
                "torch",
                *TINY_CLI,
                "--epochs",
                "1",
                "--train-limit",
                "64",
                "--test-limit",
                "64",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    err = _evaluate(capsys, run / FILE_NAME)
    assert "is a training checkpoint, not a weights file" in err and "resume the run" in err


def test_a_native_file_given_to_load_weights_names_the_loader_that_reads_it(tmp_path):
    b = load_backend("tf")
    net = b.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    path = b.save_model(net, tmp_path / "x.weights.h5")
    with pytest.raises(
        Exception,
        match=r"is a tf model file, not a \.npz weights file: read it with "
        r"vgg_tf\.load_model",
    ) as e:
        b.load_weights(net, path)
    assert type(e.value).__name__ == "WeightsError"
    assert np.isfinite(b.export_weights(net)["fc3.bias"]).all()


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


# --- code and data outside the file: never run, never read ---------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.marker),))


def test_pickle_in_place_of_a_checkpoint_is_refused_without_running_it(tmp_path):
    _Payload.marker = tmp_path / "code-ran"
    path = tmp_path / FILE_NAME
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(WeightsError, match="is not a readable checkpoint"):
        load_checkpoint(path)
    assert not _Payload.marker.exists()


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
    err = one_line(capsys, ["evaluate", path, "--test-limit", "8"])
    assert "Not allowed: H5 file with external Dataset" in err


def test_onnx_weights_kept_outside_the_models_folder_are_never_read(tmp_path, capsys):
    """ONNX's external data: a file beside the model is read; one reached by ``..`` or by a link out of the
    model's folder is refused by name (ONNX follows links), and so is a missing one, by every reader."""
    onnx = load_optional("onnx")
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
        assert says in one_line(capsys, ["evaluate", bad, "--test-limit", "8"])
        assert says in one_line(capsys, ["conform", bad])


def _relocated(onnx, path: Path, location: str) -> bytes:
    """The ONNX model at ``path`` with every weight's external data moved to ``location``, as bytes."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model.SerializeToString()


def _claiming(source: Path, target: Path, member: str, shape: tuple) -> Path:
    """A copy of the .npz ``source`` whose array ``member`` has a header claiming ``shape`` (float32) and 64
    bytes of data: what numpy allocates before it reads."""
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
    assert says in one_line(capsys, ["evaluate", bomb, "--backend", "torch", "--test-limit", "8"])
    assert says in one_line(capsys, ["convert", bomb, tmp_path / "m.pt"])
    (tmp_path / "resumed").mkdir()
    _claiming(run / FILE_NAME, tmp_path / "resumed" / FILE_NAME, "weights/fc1.weight", (100_000, 100_000))
    err = one_line(capsys, ["train", "--backend", "torch", "--out", tmp_path / "resumed", "--resume", "--epochs", "2"])
    assert "its array weights/fc1.weight is declared (100000, 100000)" in err


# --- checkpoints: damaged, of another format, altered --------------------------------------------------------------


def test_checkpoint_of_another_format_version_is_refused(tmp_path):
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    rewrite_meta(path, version=2)
    with pytest.raises(WeightsError, match="format 'vgg-checkpoint' version 2; this version resumes"):
        load_checkpoint(path)


def test_weights_file_given_as_checkpoint_is_refused(tmp_path):
    config = make_config(**TINY)
    path = save_npz(tmp_path / "weights.npz", config, xavier_init(config), "torch", "")
    with pytest.raises(WeightsError, match="format 'vgg-weights' version 1; .*load_weights, not resumed"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="is not a readable checkpoint .*damaged, truncated"):
        load_checkpoint(path)


def test_corrupted_checkpoint_is_refused(tmp_path):
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2  # inside the arrays, after the metadata
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    assert read_checkpoint_meta(path)["epoch"] == 1  # the metadata is intact ...
    with pytest.raises(WeightsError, match="is not a readable checkpoint"):
        load_checkpoint(path)  # ... the arrays are not: refused


def test_a_damaged_checkpoint_is_one_line_with_or_without_resume(tmp_path, capsys):
    run, argv = one_epoch_run(tmp_path, capsys)
    ckpt = run / FILE_NAME
    read_checkpoint_meta(ckpt)
    data = ckpt.read_bytes()
    assert b"'shape': (), }" in data
    ckpt.write_bytes(data.replace(b"'shape': (), }", b"'shape': ((, }", 1))  # NumPy's header parser: TokenError
    err = one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume"])
    assert "is not a readable checkpoint (TokenError" in err
    err = one_line(capsys, [*argv, "--out", run])
    assert "already holds a run whose checkpoint.npz cannot be read; replace the run with --overwrite" in err


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
    err = one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume"])
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
    "backend": (lambda m: m.update(backend=["torch"]), None, f"backend ['torch'] is none of {', '.join(BACKENDS)}"),
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


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    """``adam_run(backend)``: the folder of a run of one epoch of two Adam steps in that backend, trained in this
    process on first use and shared by the module's tests, which alter copies of its files (the caller then
    empties capsys of the run's lines)."""
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            load_backend(name)
            out = tmp_path_factory.mktemp(f"adam-{name}")
            argv = [*TRAIN, "--backend", name, "--epochs", "1", "--optimizer", "adam", "--lr", "0.001", "--out", out]
            assert main([str(a) for a in argv]) == 0
            runs[name] = out
        return runs[name]

    return get


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_a_checkpoint_altered_in_its_record_or_arrays_is_one_line_before_training(
    tmp_path, capsys, backend_name, adam_run
):
    """Each value of the record is checked as train() checks it, and the optimizer's and random generators'
    arrays must be the names and shapes the resuming run keeps; they had escaped as KeyError, RuntimeError,
    ValueError tracebacks from the frameworks, or resumed silently from another state."""
    run = adam_run(backend_name)
    capsys.readouterr()
    for name, (meta_change, arrays_change, says) in CHECKPOINT_DAMAGE.items():
        if name == "rng missing" and backend_name == "mxnet":
            continue  # Gluon's dropout is reseeded from (seed, epoch): its checkpoints keep no generator state
        folder = _altered(run / FILE_NAME, tmp_path / name.replace(" ", "_"), meta_change, arrays_change)
        err = one_line(capsys, ["train", "--backend", backend_name, "--out", folder, "--resume", "--epochs", "2"])
        assert says in err and str(folder / FILE_NAME) in err, (name, err)
        assert not (folder / "history.json").exists()  # refused before any epoch


# --- records and values: a configuration altered, values float32 cannot hold ---------------------------------------


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
    err = one_line(capsys, ["evaluate", bad, "--backend", "torch", "--test-limit", "8"])
    assert f"bad.safetensors has a damaged configuration record ({says}" in err
    assert "--" not in err  # the file's values are named as recorded, not as options
    assert says in one_line(capsys, ["convert", bad, tmp_path / "m.pt"])
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("name", ["m.npz", "m.pt"])
def test_weights_full_of_nan_are_refused_by_convert_and_evaluate(tmp_path, capsys, name):
    src = saved_small_network(tmp_path, name, poison=True)
    for argv in (
        ["convert", str(src), str(tmp_path / "out.npz"), "--to", "npz"],
        ["evaluate", str(src), "--backend", "torch", "--test-limit", "64"],
    ):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1
        assert f"NaN or infinite values (as float32) in {src}, in 1 parameter(s), first fc2.weight" in err
    assert not (tmp_path / "out.npz").exists()


def test_values_float32_cannot_hold_are_refused_by_import_and_save(tmp_path, backend):
    b = backend
    net = b.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    before = b.export_weights(net)
    for bad in (np.nan, np.inf, 1e300):  # 1e300 is a finite float64 that float32 rounds to infinity
        weights = {name: array.astype(np.float64) for name, array in before.items()}
        weights["fc2.weight"][0, 0] = bad
        with pytest.raises(
            WeightsError, match=r"NaN or infinite values \(as float32\) in the weights given, in 1 parameter"
        ):
            b.import_weights(net, weights)
    assert all(np.array_equal(before[n], a) for n, a in b.export_weights(net).items())  # nothing was changed
    if b.__name__ == "vgg_torch":  # a network made non-finite behind the API's back is not saved in any format
        import torch

        with torch.no_grad():
            net.fc2.weight[0, 0] = float("nan")
        for name in ("n.npz", "n.safetensors", "n.pt"):
            with pytest.raises(WeightsError, match="NaN or infinite values .as float32. in the network"):
                (b.save_weights if name.endswith(("npz", "safetensors")) else b.save_model)(net, tmp_path / name)
            assert not (tmp_path / name).exists()


# --- Keras' own load_weights refuses a file of another network -----------------------------------------------------


def test_keras_load_weights_refuses_a_model_file_of_another_configuration(tf_backend, tmp_path):
    b = tf_backend
    deeper = b.vgg(**{**TINY, "arch": "vgg13"})
    path = tmp_path / "vgg13.weights.h5"
    b.save_model(deeper, path)
    net = b.vgg(**TINY)
    before = b.export_weights(net)
    with pytest.raises(WeightsError, match=r"holds weights for vgg13 .*this network is vgg11 .*differ in arch"):
        net.load_weights(str(path))
    after = b.export_weights(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was loaded


def test_keras_load_weights_refuses_a_plain_file_of_another_network(tf_backend, tmp_path):
    b = tf_backend
    path = tmp_path / "plain.weights.h5"
    b.vgg(**{**TINY, "arch": "vgg13"}).save_weights(str(path))  # Keras' own file: no configuration inside
    net = b.vgg(**TINY)
    before = b.export_weights(net)
    with pytest.raises(WeightsError, match=r"plain.weights.h5 holds 26 variables that do not match the 22"):
        net.load_weights(str(path))
    assert all(np.array_equal(before[k], v) for k, v in b.export_weights(net).items())
    wider = tmp_path / "wider.weights.h5"
    b.vgg(**{**TINY, "fc_hidden": 32}).save_weights(str(wider))
    with pytest.raises(WeightsError, match="do not match"):
        net.load_weights(str(wider))


def test_keras_load_weights_still_loads_a_file_of_the_same_network(tf_backend, tmp_path):
    b = tf_backend
    source = b.vgg(**TINY)
    b.init_weights(source, seed=7)
    ours, plain = tmp_path / "ours.weights.h5", tmp_path / "plain.weights.h5"
    b.save_model(source, ours)
    source.save_weights(str(plain))
    want = b.export_weights(source)
    for path in (ours, plain):
        net = b.vgg(**{**TINY, "dropout": 0.2})  # dropout has no weights: the same network
        net.load_weights(str(path))
        got = b.export_weights(net)
        assert all(np.array_equal(want[k], got[k]) for k in want)


# --- declared sizes checked before anything is allocated (issue 29) ------------------------------------------------

BOMB_SHAPE = (64, 18_874_368)  # 4.5 GiB of float32 zeros, deflated to a few MiB
TRAIN = ["train", *TINY_CLI, "--batch-size", "64", "--train-limit", "128", "--test-limit", "64", "--epochs", "0"]


def _deflated_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """An .npy member of float32 zeros of ``shape``, written deflated piece by piece (never held whole)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with archive.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        zeros, left = bytes(1 << 22), int(np.prod(shape)) * 4
        while left:
            f.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))


def _bomb(path: Path) -> Path:
    """A weights file of the tiny network whose fc1.weight is declared (and inflates to) BOMB_SHAPE."""
    source = path.with_name("source.npz")
    save_npz(source, make_config(**TINY), xavier_init(make_config(**TINY)), "torch", "")
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for member in z.infolist():
            if member.filename != "fc1.weight.npy":
                out.writestr(member.filename, z.read(member))
        _deflated_member(out, "fc1.weight.npy", BOMB_SHAPE)
    assert path.stat().st_size < 64 * 2**20
    return path


def _peak(*args) -> tuple[int, str, int]:
    """`vgg ARGS` in a fresh process: its exit status, its stderr and its peak resident memory in bytes."""
    code = (
        "import json, resource, subprocess, sys\n"
        f"done = subprocess.run([sys.executable, '-m', 'common.cli', *{[str(a) for a in args]!r}], "
        "capture_output=True, text=True)\n"
        "print(json.dumps([done.returncode, done.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    done = run_python(code, timeout=300)
    rc, err, kib = json.loads(done.stdout)
    return rc, err, kib * 1024


@pytest.fixture(scope="module")
def weights_bomb(tmp_path_factory) -> Path:
    """:func:`_bomb`, deflated once for the module (seconds of zlib): its tests only read it."""
    return _bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


@pytest.mark.parametrize("command", ["evaluate", "convert"])
def test_a_deflated_bomb_is_refused_before_it_is_inflated(tmp_path, command, weights_bomb):
    """Issue 29, item 3: 4.5 GiB declared in a few MiB; refused by its header, far below that much memory."""
    bomb = weights_bomb
    args = [bomb, "--backend", "torch"] if command == "evaluate" else [bomb, tmp_path / "x.pt"]
    rc, err, peak = _peak(command, *args)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "its array fc1.weight is declared (64, 18874368) of float32" in err, err
    assert f"gives it shape {spec(make_config(**TINY)).param_shapes()['fc1.weight']}" in err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"
    assert not (tmp_path / "x.pt").exists()


def test_a_checkpoint_whose_weight_is_a_bomb_is_refused_before_it_is_inflated(tmp_path, capsys):
    load_backend("torch")
    out = tmp_path / "run"
    run_main(capsys, *TRAIN, "--backend", "torch", "--epochs", "1", "--out", out)
    ckpt = out / "checkpoint.npz"
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(ckpt) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as new:
        for member in z.infolist():
            if member.filename != "weights/fc1.weight.npy":
                new.writestr(member.filename, z.read(member))
        _deflated_member(new, "weights/fc1.weight.npy", BOMB_SHAPE)
    bomb.replace(ckpt)
    rc, err, peak = _peak("train", "--backend", "torch", "--out", out, "--resume", "--epochs", "2")
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "its array weights/fc1.weight is declared (64, 18874368)" in err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"


def _npz(path: Path, arrays: dict, version=(1, 0)) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for key, a in arrays.items():
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, a, version=version)
    return path


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npz_array_header_is_checked_before_the_array_is_made(tmp_path, version):
    """``npz_array`` on its own: either .npy header version numpy writes is read, floating point of the
    configuration's shape passes (float64 included), anything else is refused by name before numpy makes it."""
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    arrays = {"f32": good, "f64": good.astype(np.float64), "f128": good.astype(np.longdouble)}
    arrays |= {"i32": good.astype(np.int32), "wide": np.zeros((3, 2), np.float32), "big": np.zeros(64, np.float32)}
    path = _npz(tmp_path / "a.npz", arrays, version)
    with np.load(path) as z:
        assert np.array_equal(npz_array(z, "f32", path, (2, 3)), good)
        assert np.array_equal(npz_array(z, "f64", path, (2, 3)), good)
        assert np.array_equal(npz_array(z, "big", path, limit=256), np.zeros(64, np.float32))  # 256 bytes: at the limit
        for key in ("f128", "i32", "wide"):
            with pytest.raises(WeightsError) as e:
                npz_array(z, key, path, (2, 3))
            assert str(e.value).startswith(f"{path}: its array {key} is declared {arrays[key].shape} of ")
            assert "gives it shape (2, 3) in floating point" in str(e.value)
        with pytest.raises(WeightsError, match=r"claims shape \(64,\) of float32 \(256 B\) where at most 255 B"):
            npz_array(z, "big", path, limit=255)
    claims = tmp_path / "claims.npz"  # a header claiming 4 MB in a member of 64 bytes
    with zipfile.ZipFile(claims, "w") as z:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)})
        z.writestr("w.npy", header.getvalue() + bytes(64))
    with (
        np.load(claims) as z,
        pytest.raises(WeightsError, match=r"claims shape \(1000, 1000\) of float32 \(3.8 MiB\) in "),
    ):
        npz_array(z, "w", claims)


def test_an_npz_array_the_configuration_does_not_have_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    config = make_config(**TINY)
    save_npz(path, config, xavier_init(config), "torch", "")
    with zipfile.ZipFile(path, "a") as z, z.open("fc9.weight.npy", "w") as f:
        np.lib.format.write_array(f, np.zeros((2, 2), np.float32))
    done = run_vgg("evaluate", path, "--backend", "torch", "--test-limit", "64")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "holds 1 array(s) the network it describes does not have, first fc9.weight" in done.stderr


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory) -> Path:
    load_backend("torch")
    out = tmp_path_factory.mktemp("torch")
    assert main([str(a) for a in [*TRAIN, "--backend", "torch", "--out", out]]) == 0
    return out / "model.pt"


def _torch_file(source: Path, path: Path, change) -> Path:
    torch = load_backend("torch") and __import__("torch")
    saved = torch.load(source, weights_only=True)
    change(saved["state_dict"])
    torch.save(saved, path)
    return path


@pytest.mark.parametrize(
    "kind, said",
    [
        ("sparse", "tensor fc3.weight is a sparse_coo tensor on the cpu device"),
        ("sparse out of range", "tensor fc3.weight is a sparse_coo tensor"),
        ("meta", "tensor fc3.weight is a strided tensor on the meta device"),
    ],
)
def test_a_pt_holding_a_sparse_or_meta_tensor_is_one_line(tmp_path, torch_model, kind, said, capsys):
    """Issue 29, item 7."""
    torch = load_backend("torch") and __import__("torch")

    def change(state):
        w = state["fc3.weight"]
        if kind == "sparse":
            state["fc3.weight"] = w.to_sparse()
        elif kind == "meta":
            state["fc3.weight"] = torch.empty(w.shape, device="meta")
        else:
            indices = torch.tensor([[0, 99], [0, 999]])
            state["fc3.weight"] = torch.sparse_coo_tensor(indices, torch.ones(2), w.shape, check_invariants=False)

    path = _torch_file(torch_model, tmp_path / "odd.pt", change)
    capsys.readouterr()
    for command in (["evaluate", path, "--test-limit", "64"], ["convert", path, tmp_path / "x.npz"]):
        done = run_in_process(capsys, *command)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert said in done.stderr or "not a readable PyTorch model file" in done.stderr, done.stderr


def test_a_pt_with_a_compressed_member_is_refused_before_it_is_read(tmp_path, torch_model, capsys):
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(torch_model) as z, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as new:
        for member in z.infolist():
            new.writestr(member.filename, z.read(member))
    capsys.readouterr()
    done = run_in_process(capsys, "evaluate", packed, "--test-limit", "64")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "holds compressed members" in done.stderr and "torch.save never writes" in done.stderr


def test_a_weights_h5_with_a_layer_group_added_is_refused(tmp_path, capsys):
    """Issue 29, item 19: as in .npz, .safetensors and .params."""
    import h5py

    load_backend("tf")
    run_main(capsys, *TRAIN, "--backend", "tf", "--out", tmp_path / "run")
    path = (tmp_path / "run" / "model.weights.h5").rename(tmp_path / "model.weights.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("layers/extra/vars/0", data=np.zeros((3, 3), np.float32))
    for command in (["evaluate", path, "--test-limit", "64"], ["convert", path, tmp_path / "x.npz"]):
        done = run_in_process(capsys, *command)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert "variables that do not match" in done.stderr and "Traceback" not in done.stderr


def _params_array_header(shape: tuple[int, ...], flag: int = 0) -> bytes:
    return struct.pack(f"<IiI{len(shape)}qiii", 0xF993FAC9, 0, len(shape), *shape, 1, 0, flag)


def test_a_params_file_is_checked_by_its_headers_before_mxnet_reads_it(tmp_path, capsys):
    """A .params declaring an array larger than its configuration's, or than the file, is refused by its headers;
    an array added to a file of this project's is refused as in the other formats."""
    load_backend("mxnet")
    run_main(capsys, *TRAIN, "--backend", "mxnet", "--out", tmp_path)
    path = tmp_path / "model.params"
    data = path.read_bytes()
    count = struct.unpack_from("<Q", data, 16)[0]
    # an extra array: appended to the arrays, its name to the names
    names_at = len(data) - sum(8 + len(n) for n in _params_names(data, count)) - 8
    extra = _params_array_header((2,)) + np.zeros(2, np.float32).tobytes()
    names = data[names_at + 8 :] + struct.pack("<Q", 5) + b"extra"
    added = data[:16] + struct.pack("<Q", count + 1) + data[24:names_at] + extra + struct.pack("<Q", count + 1) + names
    (tmp_path / "added.params").write_bytes(added)
    # an array that declares a billion values in a file of a few hundred KiB
    huge = data[:24] + _params_array_header((1_000_000_000,)) + b"\0" * 64
    (tmp_path / "huge.params").write_bytes(huge)
    for name, said in (("added", "does not have, first extra"), ("huge", "reaches past its end")):
        done = run_in_process(capsys, "evaluate", tmp_path / f"{name}.params", "--test-limit", "64")
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr


def _params_names(data: bytes, count: int) -> list[bytes]:
    """The names at the end of a .params file of ``count`` arrays, found by walking its headers."""
    at = 24
    for _ in range(count):
        ndim = struct.unpack_from("<I", data, at + 8)[0]
        shape = struct.unpack_from(f"<{ndim}q", data, at + 12)
        flag = struct.unpack_from("<i", data, at + 12 + 8 * ndim + 8)[0]
        at += 12 + 8 * ndim + 12 + int(np.prod(shape)) * {0: 4, 3: 1}[flag]
    at += 8
    names = []
    for _ in range(count):
        length = struct.unpack_from("<Q", data, at)[0]
        names.append(data[at + 8 : at + 8 + length])
        at += 8 + length
    return names


def _alter_checkpoint(path: Path, change) -> None:
    """Rewrite the checkpoint at ``path`` with ``change(meta, arrays)`` applied."""
    from common.weights import META_KEY, write_npz

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays[META_KEY]))
    change(meta, arrays)
    arrays[META_KEY] = np.array(json.dumps(meta))
    write_npz(path, arrays)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_checkpoint_whose_update_counters_were_altered_is_one_line(tmp_path, backend, adam_run, capsys):
    """Issue 29, item 6: Gluon had failed with a ZeroDivisionError, Keras trained on to a NaN loss."""
    out = shutil.copytree(adam_run(backend), tmp_path / "run")
    capsys.readouterr()

    def change(meta, arrays):
        if backend == "mxnet":
            meta["state"]["optimizer"]["num_update"] = -1
            meta["state"]["optimizer"]["counts"] = dict.fromkeys(meta["state"]["optimizer"]["counts"], -1)
        elif backend in ("tf", "jax"):  # an integer array of the optimizer's state: Keras' iterations, optax's count
            counter = next(k for k, a in arrays.items() if k.startswith("optimizer/") and a.dtype.kind == "i")
            arrays[counter] = np.array(-1, arrays[counter].dtype)
        else:
            for key in [k for k in arrays if k.endswith("/step")]:
                arrays[key] = np.array(-1.0, arrays[key].dtype)

    _alter_checkpoint(out / "checkpoint.npz", change)
    err = one_line(capsys, ["train", "--backend", backend, "--out", out, "--resume", "--epochs", "2"])
    assert "not a count of updates from 0 to the steps taken (the run has taken 2 step(s))" in err


def _sparse(path: Path, size: int) -> None:
    """A file of ``size`` zero bytes that takes no room on disk (a sparse file)."""
    with open(path, "wb") as f:
        f.truncate(size)


def test_an_onnx_model_declaring_more_than_its_network_is_refused_before_its_data_is_read(tmp_path, capsys):
    """An initializer kept in external data that declares 3.7 GiB, and whose file holds them (a sparse file, which
    takes no room on disk), in a model of the tiny network."""
    onnx = load_optional("onnx")
    load_backend("torch")
    out = tmp_path / "run"
    run_main(capsys, *TRAIN, "--backend", "torch", "--out", out)
    exported = tmp_path / "m.onnx"
    run_main(capsys, "convert", out / "weights.npz", exported, "--backend", "torch")
    model = onnx.load(str(exported))
    huge = onnx.TensorProto(name="huge", data_type=onnx.TensorProto.FLOAT, dims=[1_000_000, 1000])
    huge.data_location = onnx.TensorProto.EXTERNAL
    huge.external_data.add(key="location", value="huge.bin")
    model.graph.initializer.append(huge)
    onnx.save(model, str(exported))
    _sparse(tmp_path / "huge.bin", 4 * 1_000_000 * 1000)
    rc, err, peak = _peak("evaluate", exported, "--test-limit", "64")
    assert rc != 0 and err.count("\n") == 1, err
    assert "declares 3.7 GiB of tensors, where the network its metadata describes holds" in err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"


def test_an_onnx_file_larger_than_its_network_is_refused_before_protobuf_reads_it(tmp_path):
    """The tiny network's metadata first, then a graph field declaring 1.4 GiB of bytes (a sparse file): protobuf
    would read the whole file before anything could be checked; the metadata is read alone, the rest skipped."""
    onnx = load_optional("onnx")
    torch = load_backend("torch")
    exported = onnx.load(str(torch.export_onnx(torch.vgg(**TINY), tmp_path / "m.onnx")))
    head = onnx.ModelProto()
    head.metadata_props.extend(exported.metadata_props)
    length, graph, varint = 1_500_000_000, 7, b""
    for shift in range(0, 35, 7):  # the graph field's length as protobuf writes it: 7 bits a byte, low first
        rest = length >> shift
        varint += bytes([(rest & 0x7F) | (0x80 if rest >> 7 else 0)])
        if not rest >> 7:
            break
    path = tmp_path / "big.onnx"
    with open(path, "wb") as f:
        f.write(head.SerializeToString() + bytes([graph << 3 | 2]) + varint)
        f.truncate(f.tell() + length)
    rc, err, peak = _peak("evaluate", path, "--test-limit", "64")
    assert rc != 0 and err.count("\n") == 1, err
    assert "big.onnx is 1.4 GiB, where the network its metadata describes holds 1.1 MiB" in err, err
    assert peak < 2**30, f"peak resident {peak / 2**30:.2f} GiB"


HUGE = 4 * 1_000_000 * 1000  # bytes of a sparse file: 3.7 GiB to read, no room on disk


def _a_users_onnx(tmp_path: Path, change) -> Path:
    """The tiny network exported to ONNX without this project's metadata (a user's model, as `vgg conform` reads
    one), with ``change(onnx, model)`` applied; ``huge.bin`` beside it, a sparse file of HUGE bytes."""
    onnx = load_optional("onnx")
    torch = load_backend("torch")
    path = torch.export_onnx(torch.vgg(**TINY), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    change(onnx, model)
    onnx.save(model, str(path))
    _sparse(tmp_path / "huge.bin", HUGE)
    return path


def _unused(onnx, model) -> None:  # 3.7 GiB that no layer takes, held by huge.bin
    extra = onnx.TensorProto(name="extra", data_type=onnx.TensorProto.FLOAT, dims=[1_000_000, 1000])
    extra.data_location = onnx.TensorProto.EXTERNAL
    extra.external_data.add(key="location", value="huge.bin")
    extra.external_data.add(key="length", value=str(HUGE))
    model.graph.initializer.append(extra)


def _reads_a_whole_file(onnx, model) -> None:  # 2 values, kept in huge.bin with no length: ONNX reads all of it
    extra = onnx.TensorProto(name="extra", data_type=onnx.TensorProto.FLOAT, dims=[2])
    extra.data_location = onnx.TensorProto.EXTERNAL
    extra.external_data.add(key="location", value="huge.bin")
    model.graph.initializer.append(extra)


def _holds_less(onnx, model) -> None:  # the first convolution's weight declared a billion times larger
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weight.dims[0] *= 1_000_000_000


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_unused, "declares 3.7 GiB of tensors, where the weights of its layers (Conv, Gemm, MatMul, "),
        (_reads_a_whole_file, "its tensor 'extra' declares shape (2,) of FLOAT (8 bytes), but holds 4000000000 bytes"),
        (_holds_less, "(8000000000, 1, 3, 3) of FLOAT (288000000000 bytes), but holds 288 bytes; it is damaged or"),
    ],
)
def test_a_users_onnx_model_is_held_to_its_declared_tensors_before_any_is_read(tmp_path, change, said):
    """`vgg conform` reads a user's ONNX model, which has no configuration of this project's to hold its tensors
    to: each must hold what its shape declares (ONNX reads external data by its length, the rest of the file
    where none is given), and all of them no more than twice its layers' weights, before any external data is
    read. They had been read (3.7 GiB) first."""
    path = _a_users_onnx(tmp_path, change)
    rc, err, peak = _peak("conform", path)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert said in err, err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"


def test_a_constant_many_layers_of_a_users_onnx_share_is_copied_no_further_than_the_model_holds(tmp_path):
    """`vgg conform` gives each layer its own copy of a constant several share (PyTorch's exporter keeps one zero
    bias for all); a 16 MiB zero tensor added to the logits by 300 Add nodes had made 4.7 GiB of copies."""

    def many_layers_share_one(onnx, model):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(4 * 2**20, np.float32), "zeros"))
        last = model.graph.output[0].name
        for k in range(300):
            model.graph.node.append(onnx.helper.make_node("Add", [last, "zeros"], [f"add{k}"]))
            last = f"add{k}"
        model.graph.output[0].name = last

    path = _a_users_onnx(tmp_path, many_layers_share_one)
    rc, err, peak = _peak("conform", path)
    assert rc == 1 and "Traceback" not in err, err  # checked, and found not to conform
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"


def test_an_onnx_file_larger_than_protobuf_holds_is_refused_before_it_is_read(tmp_path, capsys):
    load_optional("onnx")
    big = tmp_path / "big.onnx"
    _sparse(big, 2**31 + 2**20)  # 2 GiB to read
    for command in (["conform", big], ["evaluate", big, "--test-limit", "8"]):
        err = one_line(capsys, command)
        assert f"{big} is 2.0 GiB, more than the 2 GiB one ONNX (protobuf) file holds" in err, err


def test_a_msgpack_larger_than_its_network_is_refused_by_its_record_before_it_is_read(tmp_path, capsys):
    """JAX's `.msgpack` is read whole by MessagePack: its record (the first key) is read alone first, and a file
    larger than a model of the network it describes is refused. A model of the tiny network grown to 3.7 GiB (a
    sparse file) had been read whole."""
    import msgpack  # the format library flax serializes with, installed with it

    jax = load_backend("jax")
    path = jax.save_model(jax.vgg(**TINY), tmp_path / "m.msgpack")
    grown = tmp_path / "grown.msgpack"
    grown.write_bytes(path.read_bytes())
    with open(grown, "r+b") as f:
        f.truncate(HUGE)
    rc, err, peak = _peak("evaluate", grown, "--test-limit", "64")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{grown} is 3.7 GiB, more than the " in err and "a model file of the network it describes takes" in err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"
    state = msgpack.unpackb(path.read_bytes(), raw=False)  # the record after the weights, as first written
    (tmp_path / "last.msgpack").write_bytes(msgpack.packb({"variables": state["variables"], **state}))
    err = one_line(capsys, ["evaluate", tmp_path / "last.msgpack", "--test-limit", "64"])
    assert "keeps its record after its weights, as vgg_jax's first version wrote it" in err
    (tmp_path / "other.msgpack").write_bytes(msgpack.packb({"weights": 1, "vgg_meta": state["vgg_meta"]}))
    err = one_line(capsys, ["evaluate", tmp_path / "other.msgpack", "--test-limit", "64"])
    assert "is a MessagePack file but not one of this project's models" in err
    assert jax.load_model(path).config == jax.vgg(**TINY).config  # the record first: read back
