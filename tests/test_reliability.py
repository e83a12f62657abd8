"""Nothing lost, nothing unclear: interrupted training, bad input, damaged files.

One test per fault or bad input; each is a row of docs/reliability.md's table.
"""

from __future__ import annotations

import errno
import gc
import gzip
import io
import json
import os
import pickle
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from adapters import adapter
from conftest import load_backend
from helpers import (
    ONE_THREAD,
    SHORT_RUN,
    TINY,
    TINY_CLI,
    interrupt_after_first_checkpoint,
    killed_and_resumed,
    saved_weights,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common.weights
from common.arch import CONFIGS, FLOAT32_BELOW_ONE, FLOAT32_TINY, VGGConfig, make_config
from common.backends import BACKENDS
from common.checkpoint import FILE_NAME, Snapshot, load_checkpoint, read_checkpoint_meta, save_checkpoint
from common.cli import main
from common.data import read_file, read_idx
from common.errors import ConfigError, DataError, InputError, TrainingDiverged, VGGError, WeightsError
from common.recipe import Recipe
from common.spec import spec
from common.training import Epoch, History
from common.weights import META_KEY, save_npz, xavier_init


def _history(out):
    return json.loads((out / "history.json").read_text())["history"]["epochs"]


# --- 1. interruptions -------------------------------------------------------------------------------------


def test_torch_run_killed_mid_epoch_resumes_to_the_same_weights_bit_for_bit(tmp_path, capsys):
    load_backend("torch")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the uninterrupted run, in this process, computes as the one-thread `vgg` commands do
    try:
        whole, cut, saved, done = killed_and_resumed(tmp_path, "torch", SHORT_RUN, env=ONE_THREAD, capsys=capsys)
    finally:
        torch.set_num_threads(threads)
    assert 1 <= saved < 4  # the last complete epoch, readable
    assert "resuming from" in done.stdout
    a, b = saved_weights(whole / "weights.npz"), saved_weights(cut / "weights.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in _history(cut)] == [1, 2, 3, 4]


# Keras and Gluon runs killed mid-epoch: test_adversarial.py, which holds them to the uninterrupted run bit for
# bit (each epoch once, the data stream where N epochs leave it, the same weights and accuracies).


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(tmp_path, sig):
    load_backend("torch")
    out = tmp_path / "my run"  # the hint quotes it, to be pasted as it is
    rc, err = interrupt_after_first_checkpoint(out, sig, "--backend", "torch", *SHORT_RUN, env=ONE_THREAD)
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


class _Poisoned:
    """A training stream whose epoch ``bad_epoch`` holds an infinite pixel."""

    def __init__(self, data_iter, bad_epoch):
        self.data_iter, self.batches, self.bad_epoch, self.epoch = data_iter, data_iter.batches, bad_epoch, 0

    def __len__(self):
        return len(self.data_iter)

    def __iter__(self):
        self.epoch += 1
        for x, y in self.data_iter:
            if self.epoch == self.bad_epoch:
                x = x.clone()
                x[0, 0, 0, 0] = float("inf")
            yield x, y


@pytest.fixture
def torch_one_thread():
    load_backend("torch")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_backend("torch")
    torch.set_num_threads(threads)


def _tiny_torch_run(b):
    """A tiny network and data streams of 256 training and 128 test examples."""
    net = b.vgg(**TINY)
    b.import_weights(net, xavier_init(net.config, 0))
    train_iter, test_iter = b.load_data_fashion_mnist(128, resize=32, train_limit=256, test_limit=128)
    return net, train_iter, test_iter


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, torch_one_thread):
    b = torch_one_thread
    net, train_iter, test_iter = _tiny_torch_run(b)
    with pytest.raises(
        TrainingDiverged, match=r"the loss became nan at epoch 2, step 1 \(lr 0.05\).*lr=0\.005.*batch_norm=True"
    ):
        b.train(net, _Poisoned(train_iter, 2), test_iter, 3, checkpoint=tmp_path, verbose=False, check_finite=False)
    kept = load_checkpoint(tmp_path, "torch", net.config)
    assert kept.epoch == 1 and all(np.isfinite(w).all() for w in kept.weights.values())


# --- 2. bad checkpoints -----------------------------------------------------------------------------------


def _checkpoint(path, backend="torch", config=None, epoch=1, num_epochs=2, **meta_changes):
    """A checkpoint written without training: xavier weights, no optimizer state."""
    config = config or make_config(**TINY)
    recipe = {
        **Recipe(num_epochs).record(),
        "batch_size": 128,
        "train_examples": 256,
        "test_examples": 128,
    }
    history = History(backend, "cpu", [Epoch(e, 2.0, 0.5, 0.5, 100.0, 1.0) for e in range(1, epoch + 1)])
    return save_checkpoint(path, Snapshot(backend, config, recipe, epoch, history, xavier_init(config, 0)))


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


def _rewrite_meta(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {**json.loads(str(arrays[META_KEY])), **changes}
    np.savez(path, **{**arrays, META_KEY: np.array(json.dumps(meta))})


def test_resume_with_another_configuration_is_refused(tmp_path, capsys):
    _checkpoint(tmp_path / FILE_NAME)
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--ratio", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--ratio 4 differs from the run saved in" in err and "leave the option out" in err


def test_resume_with_another_backend_is_refused(tmp_path, capsys):
    _checkpoint(tmp_path / FILE_NAME, backend="mxnet")
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "resume it with --backend mxnet" in err


def test_resume_with_another_recipe_is_refused_by_the_api(tmp_path, torch_one_thread):
    b = torch_one_thread
    path = _checkpoint(tmp_path / FILE_NAME)
    net, train_iter, test_iter = _tiny_torch_run(b)
    with pytest.raises(ConfigError, match="was trained with lr 0.05 but this run asks for 0.1"):
        b.train(net, train_iter, test_iter, 2, lr=0.1, resume_from=path, verbose=False)
    with pytest.raises(WeightsError, match="this network has dropout 0.2"):
        b.train(b.vgg(**TINY, dropout=0.2), train_iter, test_iter, 2, resume_from=path, verbose=False)


def test_a_run_resumed_on_another_device_says_where_each_epoch_ran(tmp_path, torch_one_thread):
    import torch

    b = torch_one_thread
    net, train_iter, test_iter = _tiny_torch_run(b)
    first = torch.device("cpu", 0)  # another device's name on this machine ("cpu:0"), as a GPU's would be
    b.train(net, train_iter, test_iter, 1, device=first, checkpoint=tmp_path, verbose=False)
    history = b.train(
        net, train_iter, test_iter, 2, device="cpu", checkpoint=tmp_path, resume_from=tmp_path, verbose=False
    )
    assert history.device == "cpu:0 then cpu from epoch 2" and len(history.epochs) == 2
    history = b.train(net, train_iter, test_iter, 3, device="cpu", resume_from=tmp_path, verbose=False)
    assert history.device == "cpu:0 then cpu from epoch 2" and len(history.epochs) == 3


def test_a_new_run_never_overwrites_a_saved_one(tmp_path, capsys):
    path = _checkpoint(tmp_path / FILE_NAME)
    before = path.read_bytes()
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), *SHORT_RUN])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"{tmp_path} already holds a run (checkpoint.npz: epoch 1 of 2); continue it with --resume" in err
    assert path.read_bytes() == before  # untouched
    with pytest.raises(SystemExit) as stop:
        main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--overwrite"])
    assert stop.value.code == 2 and "--overwrite: not allowed with argument --resume" in capsys.readouterr().err


def test_resume_without_a_checkpoint_says_where_it_looked(tmp_path, capsys):
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"no checkpoint at {tmp_path / FILE_NAME}" in err


def test_checkpoint_of_another_format_version_is_refused(tmp_path):
    path = _checkpoint(tmp_path / FILE_NAME)
    _rewrite_meta(path, version=2)
    with pytest.raises(WeightsError, match="format 'vgg-checkpoint' version 2; this version resumes"):
        load_checkpoint(path)


def test_weights_file_given_as_checkpoint_is_refused(tmp_path):
    config = make_config(**TINY)
    path = save_npz(tmp_path / "weights.npz", config, xavier_init(config), "torch", "")
    with pytest.raises(WeightsError, match="format 'vgg-weights' version 1; .*load_weights, not resumed"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = _checkpoint(tmp_path / FILE_NAME)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="is not a readable checkpoint .*damaged, truncated"):
        load_checkpoint(path)


def test_corrupted_checkpoint_is_refused(tmp_path):
    path = _checkpoint(tmp_path / FILE_NAME)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2  # inside the arrays, after the metadata
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    assert read_checkpoint_meta(path)["epoch"] == 1  # the metadata is intact ...
    with pytest.raises(WeightsError, match="is not a readable checkpoint"):
        load_checkpoint(path)  # ... the arrays are not: refused


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


def test_resume_keeps_the_saved_precision(tmp_path, capsys):
    path = _checkpoint(tmp_path / FILE_NAME)
    recipe = read_checkpoint_meta(path)["recipe"]
    assert recipe["precision"] == "fp32"
    _rewrite_meta(path, recipe={**recipe, "precision": "bf16"})
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert rc == 2 and "--precision fp32 differs from the run saved in" in err and "(bf16)" in err
    with pytest.raises(ConfigError, match="was trained with precision 'bf16' but this run asks for 'fp32'"):
        load_checkpoint(path, "torch", make_config(**TINY), recipe)
    # a checkpoint written before the recipe recorded the precision was trained in fp32
    _rewrite_meta(path, recipe={k: v for k, v in recipe.items() if k != "precision"})
    assert load_checkpoint(path, "torch", make_config(**TINY), recipe).epoch == 1
    with pytest.raises(ConfigError, match="was trained with precision 'fp32' but this run asks for 'bf16'"):
        load_checkpoint(path, "torch", make_config(**TINY), {**recipe, "precision": "bf16"})


def test_checkpoint_of_another_configuration_is_refused_before_any_tensor(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path / FILE_NAME, config=make_config(**{**TINY, "ratio": 4}))
    reads = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda z, k: reads.append(k) or original(z, k))
    with pytest.raises(WeightsError, match="they differ in blocks"):
        load_checkpoint(path, "torch", make_config(**TINY))
    assert reads == [META_KEY]


# --- 3. bad input to the API ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nets():
    """A tiny network per backend, built on first use; the module's tests share it."""
    return {}


@pytest.fixture
def net_and_batch(backend, tiny_nets):
    """A tiny network of ``backend`` and a valid batch for it as NumPy (NCHW, or NHWC for tf.keras)."""
    if backend.__name__ not in tiny_nets:
        tiny_nets[backend.__name__] = backend.vgg(**TINY)
    layout = backend.LAYOUT
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    x = x.transpose(0, 2, 3, 1) if layout == "NHWC" else x
    return tiny_nets[backend.__name__], x, np.array([0, 1, 2, 9]), layout


def _evaluate(backend, net, x, y, **kwargs):
    return backend.evaluate_accuracy(net, [adapter(backend).to_backend(x, y)], **kwargs)


def test_valid_batch_passes_the_checks(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    assert 0 <= _evaluate(backend, net, x, y) <= 1


def test_input_of_the_wrong_rank_is_refused(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    with pytest.raises(InputError, match=r"batch 1 has shape \((1, 32, 32|32, 32, 1)\) \(rank 3\).*add the batch"):
        _evaluate(backend, net, x[0], y[:1])


def test_input_with_the_wrong_channel_count_is_refused(backend, net_and_batch):
    net, x, y, layout = net_and_batch
    x3 = np.repeat(x, 3, axis=1 if layout == "NCHW" else 3)
    with pytest.raises(InputError, match=r"has 3 channel\(s\).*build the network with in_channels=3"):
        _evaluate(backend, net, x3, y)


def test_input_of_the_wrong_spatial_size_is_refused(backend, net_and_batch):
    net, _x, y, layout = net_and_batch
    big = np.zeros((4, 1, 64, 64) if layout == "NCHW" else (4, 64, 64, 1), np.float32)
    with pytest.raises(InputError, match=r"has 64x64 images .*resize them to 32x32"):
        _evaluate(backend, net, big, y)


def test_input_of_the_wrong_dtype_is_refused(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    with pytest.raises(InputError, match="has dtype float64; .* in float32: convert it"):
        _evaluate(backend, net, x.astype(np.float64), y)


def test_calling_the_network_directly_checks_its_input(backend, net_and_batch):
    net, x, y, layout = net_and_batch
    wrong = {
        "has 3 channel(s)": np.repeat(x, 3, axis=1 if layout == "NCHW" else 3),
        "has shape": x[0],
        "has dtype float64": x.astype(np.float64),
    }
    for message, bad in wrong.items():
        with pytest.raises(InputError, match=re.escape(f"the input {message}")):
            net(adapter(backend).to_backend(bad, y)[0])
    assert tuple(net(adapter(backend).to_backend(x, y)[0]).shape) == (4, 10)


def test_labels_outside_the_classes_are_refused(backend, net_and_batch):
    net, x, _y, _ = net_and_batch
    with pytest.raises(InputError, match=r"has label 10, outside \[0, 10\)"):
        _evaluate(backend, net, x, np.array([0, 1, 10, 3]))
    with pytest.raises(InputError, match=r"has label -1, outside \[0, 10\)"):
        _evaluate(backend, net, x, np.array([0, -1, 2, 3]))


def test_non_finite_pixels_are_refused_unless_the_check_is_off(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    x = x.copy()
    x.flat[5] = np.nan
    with pytest.raises(InputError, match="holds NaN or infinite pixel values.*check_finite=False"):
        _evaluate(backend, net, x, y)
    assert 0 <= _evaluate(backend, net, x, y, check_finite=False) <= 1


def test_bad_training_batch_is_refused_before_any_step(backend, net_and_batch):
    net, x, _y, _ = net_and_batch
    before = backend.export_weights(net)
    with pytest.raises(InputError, match=r"training batch 1 of epoch 1 has label 12"):
        backend.train(net, [adapter(backend).to_backend(x, np.array([0, 1, 12, 3]))], [], 1, verbose=False)
    after = backend.export_weights(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


# --- 4. random and mutated input: only the project's own errors -------------------------------------------

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 600),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 70), max_size=3),
)
_ARCH = st.one_of(
    st.sampled_from(list(CONFIGS)),
    st.text(max_size=8),
    st.integers(),
    st.lists(st.lists(st.integers(-1, 4), max_size=3), max_size=6),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 128)), min_size=1, max_size=6),
)


def _check_valid(config, arch, in_channels, num_classes, input_size, ratio, fc_hidden, dropout, batch_norm):
    """What a configuration that validation accepted must be: its inputs, a spec that builds, a record that
    round-trips."""
    named = isinstance(arch, str)
    widths = [b.out_channels for b in make_config(arch, ratio=1, input_size=input_size).blocks]
    input_size = input_size[0] if isinstance(input_size, (list, tuple)) else input_size  # (h, w), h == w
    assert config.arch == (arch if named else "custom") and config.ratio == (ratio if named else 1)
    assert [b.out_channels for b in config.blocks] == [w // ratio for w in widths]
    if not named:
        assert [len(b.kernels) for b in config.blocks] == [n for n, _ in arch]
    assert (config.in_channels, config.num_classes, config.input_size) == (in_channels, num_classes, input_size)
    assert (config.fc_hidden, config.dropout, config.batch_norm) == (fc_hidden, dropout, batch_norm)
    s = spec(config)
    assert s.params > 0 and s.trace()[-1] == ("fc3", (1, num_classes))
    assert config.final_size >= 1 and config.flat_features >= 1 and 0 <= config.dropout < 1
    assert VGGConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # the record round-trips
    assert make_config(**config.vgg_kwargs()) == config  # and rebuilds the same


@st.composite
def valid_configurations(draw):
    """vgg() arguments that must be accepted: a named configuration or a conv_arch, and fields in range."""
    arch = draw(
        st.one_of(
            st.sampled_from(list(CONFIGS)),
            st.lists(st.tuples(st.integers(1, 4), st.integers(1, 128)), min_size=1, max_size=6),
        )
    )
    blocks = 5 if isinstance(arch, str) else len(arch)
    narrowest = min(64 if isinstance(arch, str) else min(c for _, c in arch), 64)
    return dict(
        arch=arch,
        in_channels=draw(st.integers(1, 8)),
        num_classes=draw(st.integers(1, 1000)),
        input_size=draw(st.integers(2**blocks, 600)),
        ratio=draw(st.integers(1, narrowest)),
        fc_hidden=draw(st.integers(1, 8192)),
        dropout=draw(st.one_of(st.just(0.0), st.floats(FLOAT32_TINY, FLOAT32_BELOW_ONE))),
        batch_norm=draw(st.booleans()) and arch != "vgg11_lrn",  # vgg11_lrn has no batch-norm variant
    )


@_SETTINGS
@given(kwargs=valid_configurations())
def test_valid_configurations_are_accepted_as_given(kwargs):
    _check_valid(make_config(**kwargs), **kwargs)


# One field made invalid at a time, and the words the error must say about it.
_NOT_POSITIVE = st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans())
_INVALID = {
    "arch": (
        st.one_of(st.text(max_size=8).filter(lambda a: a not in CONFIGS), st.just(())),
        r"unknown arch|arch has no blocks",
    ),
    "conv_arch_count": (st.integers(-3, 0), r"num_convs of block 1 must be a positive integer"),
    "conv_arch_width": (st.integers(-3, 0), r"out_channels of block 1 must be a positive integer"),
    "conv_arch_pair": (st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)), r"is \(.*\); each block"),
    "in_channels": (_NOT_POSITIVE, r"in_channels must be a positive integer"),
    "num_classes": (_NOT_POSITIVE, r"num_classes must be a positive integer"),
    "fc_hidden": (_NOT_POSITIVE, r"fc_hidden must be a positive integer"),
    "ratio": (_NOT_POSITIVE, r"ratio must be a positive integer"),
    "too_narrow": (st.integers(65, 10_000), r"ratio \d+ leaves block \d+ \(\d+ channels\) with zero width"),
    "input_size": (st.integers(1, 31), r"input_size \d+ is too small: 5 blocks .* the minimum is 32"),
    "dropout": (
        st.one_of(
            st.floats(1, 1e6),
            st.floats(max_value=-1e-9),
            st.just(float("nan")),
            st.text(max_size=2),
            st.floats(0, FLOAT32_TINY, exclude_min=True, exclude_max=True),  # MXNet refused these
            st.floats(FLOAT32_BELOW_ONE, 1, exclude_min=True, exclude_max=True),  # 1 in float32: NaN in Gluon
        ),
        r"dropout must be a probability in \[0, 1\) that float32 holds",
    ),
    "batch_norm": (st.one_of(st.integers(), st.none(), st.text(max_size=3)), r"batch_norm must be True or False"),
    "lrn_with_batch_norm": (st.just(True), r"vgg11_lrn has local response normalisation and no batch-norm variant"),
}


@st.composite
def invalid_configurations(draw):
    """A valid set of vgg() arguments with one field made invalid, and the message that must name it."""
    kwargs = draw(valid_configurations())
    field = draw(st.sampled_from(sorted(_INVALID)))
    bad, message = _INVALID[field]
    value = draw(bad)
    if field == "arch":
        kwargs["arch"] = value
    elif field.startswith("conv_arch"):
        pairs = [(2, 16), (1, 32)]
        pairs[0] = {"conv_arch_count": (value, 16), "conv_arch_width": (2, value), "conv_arch_pair": value}[field]
        kwargs.update(arch=pairs, ratio=1, input_size=max(kwargs["input_size"], 4))
    elif field == "too_narrow":
        kwargs.update(arch="vgg11", ratio=value)
    elif field == "input_size":
        kwargs.update(arch=draw(st.sampled_from(list(CONFIGS))), input_size=value, batch_norm=False)
    elif field == "lrn_with_batch_norm":
        kwargs.update(arch="vgg11_lrn", batch_norm=True)
    else:
        kwargs[field] = value
    return kwargs, message


@_SETTINGS
@given(case=invalid_configurations())
def test_invalid_configurations_get_the_projects_own_error_saying_what_is_wrong(case):
    kwargs, message = case
    with pytest.raises(ConfigError) as e:
        make_config(**kwargs)
    text = str(e.value)
    assert re.search(message, text), f"{kwargs}: {text}"
    assert "\n" not in text and len(text) < 400


@_SETTINGS
@given(
    arch=_ARCH,
    in_channels=_ANY,
    num_classes=_ANY,
    input_size=_ANY,
    ratio=_ANY,
    fc_hidden=_ANY,
    dropout=st.one_of(_ANY, st.floats(-1, 2)),
    batch_norm=st.one_of(st.booleans(), _ANY),
)
def test_any_arguments_give_a_valid_config_or_the_projects_own_error(
    arch, in_channels, num_classes, input_size, ratio, fc_hidden, dropout, batch_norm
):
    """Anything at all: never an exception of another kind (what it accepts is checked as above)."""
    args = (arch, in_channels, num_classes, input_size, ratio, fc_hidden, dropout, batch_norm)
    try:
        config = make_config(*args)
    except VGGError as e:
        assert str(e)
        return
    _check_valid(config, *args)


def _idx(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


_IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@_SETTINGS
@given(
    code=st.sampled_from(sorted(_IDX_CODES)),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    mutation=st.one_of(
        st.none(), st.tuples(st.integers(0, 40), st.integers(0, 255)), st.integers(0, 40), st.binary(max_size=5)
    ),
)
def test_idx_reader_returns_exactly_the_data_or_its_own_error(code, shape, mutation):
    array = (np.arange(int(np.prod(shape))) % 100).astype(_IDX_CODES[code]).reshape(shape)
    raw = _idx(array, code)
    if isinstance(mutation, tuple):  # overwrite one byte
        i = mutation[0] % len(raw)
        raw = raw[:i] + bytes([mutation[1]]) + raw[i + 1 :]
    elif isinstance(mutation, int):  # cut the file
        raw = raw[:mutation]
    elif isinstance(mutation, bytes):  # append junk
        raw = raw + mutation
    try:
        parsed = read_idx(raw)
    except DataError:
        assert raw != _idx(array, code), "a valid file was refused"
        return
    header = 4 + 4 * raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3]))
    assert parsed.shape == dims and len(raw) == header + parsed.nbytes  # never a silent wrong result
    assert parsed.tobytes() == raw[header:]
    if raw == _idx(array, code):
        assert np.array_equal(parsed, array) and parsed.dtype == array.dtype


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=64), compressed=st.booleans())
def test_idx_files_of_random_bytes_give_only_data_errors(tmp_path, payload, compressed):
    path = tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(payload) if compressed and payload[:1] != b"\0" else payload)
    with pytest.raises(DataError):  # the published file's checksum cannot match
        read_file(path)


# --- 5. the command line: one line on stderr, a non-zero exit, no traceback -------------------------------


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
