"""Files that are not what their name says: one line that says what the file is and what to do instead."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import load_backend
from helpers import TINY_CLI

from common.checkpoint import FILE_NAME
from common.cli import main
from common.errors import WeightsError


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


def _saved(tmp_path, name="m.npz", poison=False):
    """A small network saved by the project; ``poison``: then one value made NaN in the file (no save writes one)."""
    b = load_backend("torch")
    net = b.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    path = b.save_weights(net, tmp_path / name) if name.endswith(".npz") else b.save_model(net, tmp_path / name)
    if poison and name.endswith(".npz"):
        with np.load(path) as z:
            arrays = dict(z)
        arrays["fc2.weight"][0, 0] = np.nan
        np.savez(path, **arrays)
    elif poison:
        import torch

        saved = torch.load(path, weights_only=True)
        saved["state_dict"]["fc2.weight"][0, 0] = np.nan
        torch.save(saved, path)
    return path


def test_convert_keeps_an_existing_destination_unless_told(tmp_path, capsys):
    src = _saved(tmp_path)
    dst = tmp_path / "kept.pt"
    dst.write_bytes(b"the user's file")
    rc = main(["convert", str(src), str(dst), "--to", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "already exists; replace it with --overwrite" in err
    assert dst.read_bytes() == b"the user's file"
    assert main(["convert", str(src), str(dst), "--to", "torch", "--overwrite"]) == 0
    assert dst.read_bytes() != b"the user's file"


@pytest.mark.parametrize("name", ["m.npz", "m.pt"])
def test_weights_full_of_nan_are_refused_by_convert_and_evaluate(tmp_path, capsys, name):
    src = _saved(tmp_path, name, poison=True)
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
