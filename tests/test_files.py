"""Files the project reads: each tensor's declared shape and dtype checked against the file's configuration before
anything of its size is made, whatever the file's compression; damaged and hostile files are one line."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend
from helpers import TINY, TINY_CLI, run_python, run_vgg

from common.arch import make_config as vgg_config
from common.spec import spec
from common.weights import save_npz, xavier_init

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
    save_npz(source, vgg_config(**TINY), xavier_init(vgg_config(**TINY)), "torch", "")
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


@pytest.mark.parametrize("command", ["evaluate", "convert"])
def test_a_deflated_bomb_is_refused_before_it_is_inflated(tmp_path, command):
    """Issue 29, item 3: 4.5 GiB declared in a few MiB; refused by its header, far below that much memory."""
    bomb = _bomb(tmp_path / "bomb.npz")
    args = [bomb, "--backend", "torch"] if command == "evaluate" else [bomb, tmp_path / "x.pt"]
    rc, err, peak = _peak(command, *args)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "its array fc1.weight is declared (64, 18874368) of float32" in err, err
    assert f"gives it shape {spec(vgg_config(**TINY)).param_shapes()['fc1.weight']}" in err
    assert peak < 1.5 * 2**30, f"peak resident {peak / 2**30:.2f} GiB"
    assert not (tmp_path / "x.pt").exists()


def test_a_checkpoint_whose_weight_is_a_bomb_is_refused_before_it_is_inflated(tmp_path):
    out = tmp_path / "run"
    assert run_vgg(*TRAIN, "--backend", "torch", "--epochs", "1", "--out", out).returncode == 0
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


def test_an_npz_array_the_configuration_does_not_have_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    config = vgg_config(**TINY)
    save_npz(path, config, xavier_init(config), "torch", "")
    with zipfile.ZipFile(path, "a") as z:
        with z.open("fc9.weight.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros((2, 2), np.float32))
    done = run_vgg("evaluate", path, "--backend", "torch", "--test-limit", "64")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "holds 1 array(s) the network it describes does not have, first fc9.weight" in done.stderr


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch")
    done = run_vgg(*TRAIN, "--backend", "torch", "--out", out)
    assert done.returncode == 0, done.stderr
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
def test_a_pt_holding_a_sparse_or_meta_tensor_is_one_line(tmp_path, torch_model, kind, said):
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
    for command in (["evaluate", path, "--test-limit", "64"], ["convert", path, tmp_path / "x.npz"]):
        done = run_vgg(*command)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert said in done.stderr or "not a readable PyTorch model file" in done.stderr, done.stderr


def test_a_pt_with_a_compressed_member_is_refused_before_it_is_read(tmp_path, torch_model):
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(torch_model) as z, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as new:
        for member in z.infolist():
            new.writestr(member.filename, z.read(member))
    done = run_vgg("evaluate", packed, "--test-limit", "64")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "holds compressed members" in done.stderr and "torch.save never writes" in done.stderr


def test_a_weights_h5_with_a_layer_group_added_is_refused(tmp_path):
    """Issue 29, item 19: as in .npz, .safetensors and .params."""
    import h5py

    done = run_vgg(*TRAIN, "--backend", "tf", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    path = (tmp_path / "run" / "model.weights.h5").rename(tmp_path / "model.weights.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("layers/extra/vars/0", data=np.zeros((3, 3), np.float32))
    for command in (["evaluate", path, "--test-limit", "64"], ["convert", path, tmp_path / "x.npz"]):
        done = run_vgg(*command)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert "variables that do not match" in done.stderr


def _params_array_header(shape: tuple[int, ...], flag: int = 0) -> bytes:
    return struct.pack(f"<IiI{len(shape)}qiii", 0xF993FAC9, 0, len(shape), *shape, 1, 0, flag)


def test_a_params_file_is_checked_by_its_headers_before_mxnet_reads_it(tmp_path):
    """A .params declaring an array larger than its configuration's, or than the file, is refused by its headers;
    an array added to a file of this project's is refused as in the other formats."""
    done = run_vgg(*TRAIN, "--backend", "mxnet", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
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
        done = run_vgg("evaluate", tmp_path / f"{name}.params", "--test-limit", "64")
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


@pytest.mark.parametrize("backend", ["torch", "tf", "mxnet"])
def test_a_checkpoint_whose_update_counters_were_altered_is_one_line(tmp_path, backend):
    """Issue 29, item 6: Gluon had failed with a ZeroDivisionError, Keras trained on to a NaN loss."""
    out = tmp_path / "run"
    args = [*TRAIN, "--backend", backend, "--epochs", "1", "--optimizer", "adam", "--out", out]
    assert run_vgg(*args).returncode == 0

    def change(meta, arrays):
        if backend == "mxnet":
            meta["state"]["optimizer"]["num_update"] = -1
            meta["state"]["optimizer"]["counts"] = dict.fromkeys(meta["state"]["optimizer"]["counts"], -1)
        elif backend == "tf":
            counter = next(k for k, a in arrays.items() if k.startswith("optimizer/") and a.dtype.kind == "i")
            arrays[counter] = np.array(-1, arrays[counter].dtype)
        else:
            for key in [k for k in arrays if k.endswith("/step")]:
                arrays[key] = np.array(-1.0, arrays[key].dtype)

    _alter_checkpoint(out / "checkpoint.npz", change)
    done = run_vgg("train", "--backend", backend, "--out", out, "--resume", "--epochs", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "not a count of updates from 0 to the steps taken (the run has taken 2 step(s))" in done.stderr


def test_an_onnx_model_declaring_more_than_its_network_is_refused_before_its_data_is_read(tmp_path):
    """An initializer kept in external data that declares 3.7 GiB, in a model of the tiny network."""
    import onnx

    out = tmp_path / "run"
    assert run_vgg(*TRAIN, "--backend", "torch", "--out", out).returncode == 0
    exported = tmp_path / "m.onnx"
    done = run_vgg("convert", out / "weights.npz", exported, "--backend", "torch")
    assert done.returncode == 0, done.stderr
    model = onnx.load(str(exported))
    huge = onnx.TensorProto(name="huge", data_type=onnx.TensorProto.FLOAT, dims=[1_000_000, 1000])
    huge.data_location = onnx.TensorProto.EXTERNAL
    huge.external_data.add(key="location", value="huge.bin")
    model.graph.initializer.append(huge)
    onnx.save(model, str(exported))
    (tmp_path / "huge.bin").write_bytes(b"\0" * 64)
    done = run_vgg("evaluate", exported, "--test-limit", "64")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "declares 3.7 GiB of tensors, where the network its metadata describes holds" in done.stderr
