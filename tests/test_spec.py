"""The analytic spec against the paper, the book and the model zoos; configuration errors by message."""

import json
import re

import numpy as np
import pytest
from helpers import BOOK_VGG11_PARAMS, BOOK_VGG11_SHAPES, FUZZ, TINY, run_in_process
from hypothesis import given
from hypothesis import strategies as st

from common.arch import (
    CONFIGS,
    FLOAT32_BELOW_ONE,
    FLOAT32_TINY,
    VGGConfig,
    conv_arch,
    make_alexnet_config,
    make_config,
)
from common.errors import ConfigError, VGGError
from common.spec import available_memory, check_memory, memory_needed, spec

PAPER_MILLIONS = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}


@pytest.mark.parametrize("arch", CONFIGS)
def test_paper_table2_parameter_counts(arch):
    assert round(spec(arch=arch, in_channels=3, num_classes=1000).params / 1e6) == PAPER_MILLIONS[arch]


def test_model_zoo_counts_exactly():
    assert spec(arch="vgg16", in_channels=3, num_classes=1000).params == 138_357_544  # torchvision, Keras, Gluon
    assert spec(arch="vgg19", in_channels=3, num_classes=1000).params == 143_667_240
    assert spec(arch="vgg16", in_channels=3, num_classes=1000, batch_norm=True).params == 138_365_992  # vgg16_bn


def test_book_vgg11_trace_and_count():
    s = spec(arch="vgg11")
    assert s.params == BOOK_VGG11_PARAMS
    shapes = [shape for name, shape in s.trace() if not name.startswith(("relu", "dropout"))]
    assert shapes == BOOK_VGG11_SHAPES


def test_book_conv_arch_and_small_conv_arch():
    book = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    assert spec(arch=book).params == spec(arch="vgg11").params
    small = make_config(book, ratio=4)
    assert conv_arch(small) == ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
    assert conv_arch(make_config("vgg11", ratio=4)) == conv_arch(small)


def test_receptive_field_of_stacked_3x3_convs():
    s = spec(arch=((3, 8),), input_size=32)
    assert [layer.rf for layer in s.layers if layer.kind == "conv"] == [3, 5, 7]  # three 3x3 convs see 7x7
    assert [layer.rf for layer in s.layers if layer.kind == "pool"] == [8]
    # each pool doubles the step between neighbours: VGG-16's last pool sees 212x212 (the published figure)
    assert [layer.rf for layer in spec(arch="vgg16").layers if layer.kind == "pool"] == [6, 16, 44, 100, 212]


def test_macs_of_one_conv_and_dense_layer():
    s = spec(arch="vgg11", in_channels=3, num_classes=1000)
    conv = next(layer for layer in s.layers if layer.name == "block1.conv1")
    assert conv.macs == 64 * 3 * 9 * 224 * 224
    assert next(layer for layer in s.layers if layer.name == "fc1").macs == 25088 * 4096
    assert s.macs == sum(layer.macs for layer in s.layers) and 7.5e9 < s.macs < 7.7e9  # VGG-11: ~7.6 GMACs


def test_batch_norm_statistics_are_buffers_not_params():
    plain, bn = spec(arch="vgg13"), spec(arch="vgg13", batch_norm=True)
    widths = sum(len(b.kernels) * b.out_channels for b in bn.config.blocks)
    assert bn.params - plain.params == 2 * widths and bn.buffers == 2 * widths and plain.buffers == 0


def test_config_c_has_1x1_convs_and_lrn_only_in_a_lrn():
    c = spec(arch="vgg16_c", input_size=32)
    assert [layer.name for layer in c.layers if layer.kind == "conv" and layer.param_shapes[0][1][2] == 1] == [
        "block3.conv3",
        "block4.conv3",
        "block5.conv3",
    ]
    assert [layer.name for layer in spec(arch="vgg11_lrn", input_size=32).layers if layer.kind == "lrn"] == [
        "block1.lrn"
    ]


# Table 1 of the paper: the kernel side of each conv of each block (widths 64, 128, 256, 512, 512); C's third
# conv of blocks 3-5 is 1x1, and A-LRN is A with an LRN after its first conv's ReLU.
TABLE1 = {
    "vgg11": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "vgg11_lrn": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "vgg16_c": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
}
WIDTHS = (64, 128, 256, 512, 512)
BN = ("weight", "bias", "running_mean", "running_var")  # running_* are buffers, not trainable


def _documented_head(first, features, hidden, classes):
    """flatten, fc{first}, relu, dropout, fc{first+1}, relu, dropout, fc{first+2}; dense weights (out, in)."""
    rows, params = [("flatten", "flatten")], []
    for n, (out, inp) in enumerate([(hidden, features), (hidden, hidden), (classes, hidden)], start=first):
        rows.append((f"fc{n}", "linear"))
        rows += [(f"relu{n}", "relu"), (f"dropout{n}", "dropout")] if n < first + 2 else []
        params += [(f"fc{n}.weight", (out, inp)), (f"fc{n}.bias", (out,))]
    return rows, params


def _documented_vgg(arch, batch_norm, in_channels, side, hidden, classes):
    """The canonical names written out from the documented rule: rows (name, kind) and parameters (name, shape).

    Block i (from 1) holds conv{j}, [bn{j}], relu{j} for each of its convs j (from 1), [lrn after the first],
    then pool; a conv's weight is (out, in, k, k), a batch norm's four vectors are its channels'.
    """
    rows, params, c = [], [], in_channels
    for i, (kernels, width) in enumerate(zip(TABLE1[arch], WIDTHS, strict=True), start=1):
        for j, k in enumerate(kernels, start=1):
            rows.append((f"block{i}.conv{j}", "conv"))
            params += [(f"block{i}.conv{j}.weight", (width, c, k, k)), (f"block{i}.conv{j}.bias", (width,))]
            c = width
            if batch_norm:
                rows.append((f"block{i}.bn{j}", "bn"))
                params += [(f"block{i}.bn{j}.{name}", (width,)) for name in BN]
            rows.append((f"block{i}.relu{j}", "relu"))
            if arch == "vgg11_lrn" and (i, j) == (1, 1):
                rows.append(("block1.lrn", "lrn"))
        rows.append((f"block{i}.pool", "pool"))
        side //= 2
    head_rows, head_params = _documented_head(1, c * side * side, hidden, classes)
    return rows + head_rows, params + head_params


def _check_rows_follow_from_their_parameters(s):
    """Each row's counts from its own parameters: trainable ones, batch-norm statistics as buffers, MACs of a conv
    (per output pixel) or dense layer; a layer without weights keeps the shape and receptive field before it."""
    before = (s.config.in_channels, s.config.input_size, s.config.input_size)
    rf = 1
    for layer in s.layers:
        sizes = {name: int(np.prod(shape)) for name, shape in layer.param_shapes}
        buffers = sum(n for name, n in sizes.items() if name.startswith("running_"))
        assert (layer.params, layer.buffers) == (sum(sizes.values()) - buffers, buffers), layer.name
        pixels = int(np.prod(layer.shape[1:])) if layer.kind == "conv" else 1
        assert layer.macs == (sizes["weight"] * pixels if layer.kind in ("conv", "linear") else 0), layer.name
        if layer.kind in ("bn", "relu", "lrn", "dropout"):
            assert (layer.shape, layer.rf) == (before, rf if len(before) == 3 else None), layer.name
        before, rf = layer.shape, layer.rf if layer.rf is not None else rf


@pytest.mark.parametrize(
    "arch, batch_norm", [("vgg11", False), ("vgg11", True), ("vgg11_lrn", False), ("vgg16_c", False)]
)
def test_layer_kinds_and_parameter_names_are_the_documented_canonical_ones(arch, batch_norm):
    """The names every backend's weights carry (block1.conv1.weight, block1.bn1.running_var, fc1.weight, ...):
    the framework-free pin of what the backend tests compare each framework's names with."""
    s = spec(arch=arch, batch_norm=batch_norm, in_channels=3, num_classes=7, fc_hidden=32, input_size=64)
    rows, params = _documented_vgg(arch, batch_norm, 3, 64, 32, 7)
    assert [(layer.name, layer.kind) for layer in s.layers] == rows
    assert list(s.param_shapes().items()) == params  # in the network's order
    _check_rows_follow_from_their_parameters(s)


def test_alexnet_layer_kinds_and_parameter_names_are_caffes():
    """conv1..conv5, pool1, pool2, pool5, fc6..fc8, as in Caffe's reference model (the book's 224 px input)."""
    s = spec(make_alexnet_config(in_channels=1, num_classes=10))
    rows, params, c = [], [], 1
    for n, (width, k) in enumerate([(96, 11), (256, 5), (384, 3), (384, 3), (256, 3)], start=1):
        rows += [(f"conv{n}", "conv"), (f"relu{n}", "relu")] + ([(f"pool{n}", "pool")] if n in (1, 2, 5) else [])
        params += [(f"conv{n}.weight", (width, c, k, k)), (f"conv{n}.bias", (width,))]
        c = width
    head_rows, head_params = _documented_head(6, 256 * 5 * 5, 4096, 10)
    assert [(layer.name, layer.kind) for layer in s.layers] == rows + head_rows
    assert list(s.param_shapes().items()) == params + head_params
    _check_rows_follow_from_their_parameters(s)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 28}, "minimum is 32"),
        ({"input_size": (224, 200)}, "must be square"),
        ({"input_size": 0}, "positive integer"),
        ({"input_size": -5}, "positive integer"),
        ({"arch": "vgg12"}, "unknown arch 'vgg12'; known: vgg11, vgg11_lrn, vgg13, vgg16_c, vgg16, vgg19"),
        ({"arch": ((1, 64), (0, 128))}, "num_convs of block 2 must be a positive integer"),
        ({"arch": ((1, -64),)}, "out_channels of block 1 must be a positive integer"),
        ({"arch": ((1, 64, 3),)}, "each block is a (num_convs, out_channels) pair"),
        ({"arch": ()}, "at least one"),
        ({"ratio": 128}, "ratio 128 leaves block 1 (64 channels) with zero width; use a ratio of at most 64"),
        ({"ratio": 0}, "ratio must be a positive integer"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
        ({"num_classes": 2.5}, "num_classes must be a positive integer"),
        ({"fc_hidden": True}, "fc_hidden must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be a probability"),
        ({"arch": "vgg11_lrn", "batch_norm": True}, "no batch-norm variant"),
        ({"batch_norm": "yes"}, "batch_norm must be True or False"),
    ],
)
def test_impossible_configurations_fail_with_a_message(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(**kwargs)


def test_fewer_blocks_lower_the_minimum_input():
    assert make_config(((1, 8), (1, 16)), input_size=4).final_size == 1
    with pytest.raises(ConfigError, match="minimum is 4"):
        make_config(((1, 8), (1, 16)), input_size=3)


# --- any arguments: a valid configuration or the project's own error -----------------------------------------------


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


@FUZZ
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


@FUZZ
@given(case=invalid_configurations())
def test_invalid_configurations_get_the_projects_own_error_saying_what_is_wrong(case):
    kwargs, message = case
    with pytest.raises(ConfigError) as e:
        make_config(**kwargs)
    text = str(e.value)
    assert re.search(message, text), f"{kwargs}: {text}"
    assert "\n" not in text and len(text) < 400


@FUZZ
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


# --- a network too big for the machine is refused before anything is allocated -------------------------------------


def _one_line_error(result):
    """The command failed with one line on stderr and no traceback; that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


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
