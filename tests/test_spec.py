"""The analytic spec against the paper, the book and the model zoos; configuration errors by message."""

import re

import pytest
from helpers import BOOK_VGG11_PARAMS, BOOK_VGG11_SHAPES

from common.arch import CONFIGS, conv_arch, make_config
from common.errors import ConfigError
from common.spec import spec

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
