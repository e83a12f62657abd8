"""Nothing lost, nothing unclear, round two: input in the other layout, weights of another network through the
framework's own loader, TensorFlow's start-up noise, configurations too big for the machine, exact resume.

Each test is a row of docs/reliability.md.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from adapters import adapter
from conftest import load_backend
from helpers import ONE_THREAD, SHORT_RUN, TINY, killed_and_resumed, run_in_process, run_vgg, saved_weights

from common.arch import make_config
from common.backends import BACKENDS
from common.checkpoint import load_checkpoint
from common.errors import ConfigError, InputError, WeightsError
from common.spec import available_memory, check_memory, memory_needed, spec

# One thread per framework: runs side by side stay fast, and a resumed run uses the thread count of the first.
THREADS = {k: v for k, v in ONE_THREAD.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

# How each framework's network is told to transpose a batch of the other layout.
TRANSPOSE = {
    "vgg_torch": "this looks NHWC (channels last); the PyTorch network takes NCHW: transpose it with "
    "x.permute(0, 3, 1, 2)",
    "vgg_tf": "this looks NCHW (channels first); the tf.keras network takes NHWC: transpose it with "
    "tf.transpose(x, (0, 2, 3, 1))",
    "vgg_mxnet": "this looks NHWC (channels last); the MXNet network takes NCHW: transpose it with "
    "x.transpose((0, 3, 1, 2))",
    "vgg_jax": "this looks NCHW (channels first); the JAX (Flax) network takes NHWC: transpose it with "
    "jnp.transpose(x, (0, 2, 3, 1))",
}


def _one_line_error(result):
    """The command failed with one line on stderr and no traceback; that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- layout: a batch of the other layout is named as such ---------------------------------------------------

_NETS: dict = {}


def _tiny(backend):
    if backend.__name__ not in _NETS:
        _NETS[backend.__name__] = backend.vgg(**TINY)
    return _NETS[backend.__name__]


def _tensor(backend, x):
    """``x`` as the framework's tensor, its dtype kept."""
    return adapter(backend).to_backend(x, np.zeros(len(x), np.int64))[0]


def _other_layout(backend, dtype=np.float32):
    """A valid batch of the tiny network, but in the layout its framework does not take."""
    x = np.random.default_rng(0).random((4, 1, 32, 32)).astype(dtype)  # NCHW
    return x if backend.LAYOUT == "NHWC" else x.transpose(0, 2, 3, 1)


def test_a_batch_of_the_other_layout_is_named_with_the_way_to_transpose_it(backend):
    net = _tiny(backend)
    with pytest.raises(InputError, match=re.escape("the input has shape (4, ")) as caught:
        net(_tensor(backend, _other_layout(backend)))
    message = str(caught.value)
    assert TRANSPOSE[backend.__name__] in message
    assert "channel(s)" not in message and "in_channels" not in message  # not the wrong advice
    assert f"to get {(4, 1, 32, 32) if backend.LAYOUT == 'NCHW' else (4, 32, 32, 1)}" in message
    assert "float64" not in message


def test_a_batch_wrong_in_layout_and_dtype_is_told_both(backend):
    net = _tiny(backend)
    x = _other_layout(backend, np.float64)
    with pytest.raises(InputError) as caught:
        net(_tensor(backend, x))
    assert TRANSPOSE[backend.__name__] in str(caught.value)
    assert "float64: convert it to float32" in str(caught.value)
    _, y = adapter(backend).to_backend(x, np.array([0, 1, 2, 3], np.int64))
    with pytest.raises(InputError, match=r"evaluation batch 1 has shape .*this looks N.*float64: convert it"):
        backend.evaluate_accuracy(net, [(_tensor(backend, x), y)])


def test_a_batch_wrong_in_channels_and_dtype_is_told_both(backend):
    net = _tiny(backend)
    x = np.random.default_rng(0).random((4, 3, 32, 32) if backend.LAYOUT == "NCHW" else (4, 32, 32, 3))
    with pytest.raises(InputError, match=r"has 3 channel\(s\).*in_channels=3; it is also float64: convert it"):
        net(_tensor(backend, x))


# --- Keras' own load_weights refuses a file of another network ----------------------------------------------


@pytest.fixture(scope="module")
def tf_backend():
    return load_backend("tf")


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


# --- TensorFlow's start-up notices stay out of the command's output --------------------------------------------

SUMMARY_TF = ["summary", "--backends", "tf", "--arch", "vgg11", "--ratio", "8", "--input-size", "32"]


def test_tensorflow_start_up_notices_are_hidden_unless_verbose(tf_backend):
    env = {**THREADS, "TF_CPP_MIN_LOG_LEVEL": None}  # as a user's shell has it
    quiet = run_vgg(*SUMMARY_TF, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if "oneDNN" in line or "absl" in line], quiet.stderr
    loud = run_vgg(*SUMMARY_TF, "--verbose", env=env, timeout=120)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "absl::InitializeLog" in loud.stderr  # what TensorFlow 2.21 prints before its logging starts


def test_the_log_level_hides_only_the_lines_below_it(tf_backend):
    import vgg_tf

    info = "I0000 00:00:1795738919.618608    1041 port.cc:153] oneDNN custom operations are on."
    warning = "W0000 00:00:1795738919.618608    1041 x.cc:1] a warning"
    preamble = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    assert [vgg_tf._hidden(line, 1) for line in (info, warning, preamble, "Traceback (most recent call last):")] == [
        True,
        False,
        True,
        False,
    ]
    assert vgg_tf._hidden(warning, 2) and not vgg_tf._hidden(info, 0) and not vgg_tf._hidden(preamble, 0)


# --- a network too big for the machine is refused before anything is allocated ------------------------------

requires_meminfo = pytest.mark.skipif(
    available_memory() is None, reason="no /proc/meminfo: the memory check is skipped where it cannot be read"
)


@requires_meminfo
@pytest.mark.parametrize(
    "command, option, value, named",
    [
        ("summary", "--input-size", "100000", "lower --input-size (--input-size "),
        ("summary", "--fc-hidden", "1000000000", "lower --fc-hidden (--fc-hidden "),
        ("summary", "--arch", "1,1000000", "narrow the blocks of --arch"),
        ("train", "--resize", "100000", "lower --resize (--resize "),
        ("train", "--fc-hidden", "1000000000", "lower --fc-hidden (--fc-hidden "),
        ("train", "--arch", "1,1000000", "narrow the blocks of --arch"),
    ],
)
def test_a_network_too_big_for_the_memory_is_refused_before_building(command, option, value, named, capsys):
    args = ["summary", "--backends", "all"] if command == "summary" else ["train", "--backend", "torch"]
    done = run_in_process(capsys, *args, option, value)  # refused in seconds: nothing was built or allocated
    line = _one_line_error(done)
    assert re.match(r"error: the network \(.*\) needs at least [\d.]+ [TP]iB of memory ", line), line
    assert re.search(r"but [\d.]+ [GMT]iB is available", line) and named in line, line
    assert ("to train (parameters, gradients and the activations of a batch of 128)" in line) == (command == "train")


def test_the_python_api_refuses_it_too_naming_its_argument(backend):
    if available_memory() is None:
        pytest.skip("no /proc/meminfo: the memory check is skipped where it cannot be read")
    with pytest.raises(ConfigError, match=r"needs at least .* of memory for its parameters.*lower input_size") as e:
        backend.vgg(input_size=100_000)
    assert e.value.field == "input_size"
    with pytest.raises(ConfigError, match=r"lower fc_hidden \(fc_hidden=\d+ fits\)"):
        backend.vgg(fc_hidden=10**9)


def test_the_estimate_counts_parameters_gradients_and_one_batch_of_activations():
    config = make_config(**TINY)
    s = spec(config)
    outputs = sum(int(np.prod(layer.shape)) for layer in s.layers) + 32 * 32
    assert memory_needed(config) == 4 * (s.params + s.buffers)
    assert memory_needed(config, 16) == 4 * (2 * s.params + s.buffers + 16 * outputs)
    big = make_config("vgg16", input_size=224)
    enough = memory_needed(big, 128)
    check_memory(big, 128, available=enough)  # exactly enough passes
    with pytest.raises(ConfigError, match=r"lower batch_size \(batch_size=(\d+) fits\)") as caught:
        check_memory(big, 128, available=enough // 2)
    fits = int(re.search(r"batch_size=(\d+)", str(caught.value))[1])
    assert memory_needed(big, fits) <= enough // 2 < memory_needed(big, fits + 1)
    with pytest.raises(ConfigError, match=r"raise ratio \(ratio=(\d+) fits\)"):
        check_memory(make_config("vgg16", input_size=32, fc_hidden=64), None, available=4 * 10**6)


# --- a run killed mid-epoch resumes to exactly the weights of an uninterrupted one, in every framework ----------

# The smallest run that learns (batch norm: without it this tiny network stays at chance and proves little).
LEARNING_RUN = [*SHORT_RUN, "--batch-norm"]


@pytest.mark.parametrize("name", [name for name in BACKENDS if name != "torch"])  # torch: test_reliability
def test_runs_killed_mid_epoch_resume_bit_for_bit(tmp_path, name, capsys):
    load_backend(name)
    # the uninterrupted run in this process, the others as `vgg` commands: all with the thread count of this one
    whole, cut, saved, _ = killed_and_resumed(tmp_path, name, LEARNING_RUN, capsys=capsys)
    assert saved < 4
    a, b = saved_weights(whole / "weights.npz"), saved_weights(cut / "weights.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    runs = [json.loads((out / "history.json").read_text())["history"]["epochs"] for out in (whole, cut)]
    assert [e["epoch"] for e in runs[1]] == [1, 2, 3, 4]  # each epoch exactly once
    assert load_checkpoint(cut).state["data_epoch"] == 4  # the stream is where 4 epochs leave it
    assert [e["test_acc"] for e in runs[0]] == [e["test_acc"] for e in runs[1]]
    assert len({e["test_acc"] for e in runs[0]}) > 1  # it learned: the weights compared are not a fixed point
