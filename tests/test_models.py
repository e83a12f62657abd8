"""Every backend builds every configuration with the spec's shapes and parameter counts."""

import inspect
import re

import numpy as np
import pytest
from adapters import adapter, build_abstract, forward
from conftest import load_backend
from helpers import BOOK_VGG11_PARAMS, BOOK_VGG11_SHAPES, resident_mib, run_python

from common.backends import API, BACKENDS
from common.errors import ConfigError
from common.spec import spec

# A sampled matrix in which every axis is covered for every backend: each configuration with and without
# batch norm, ratios 1/2/4/8, inputs 32/96/224, in_channels 1 and 3, classes 10 and 1000, and a conv_arch.
MATRIX = [
    dict(arch="vgg11"),  # the book's VGG-11
    dict(arch="vgg11", batch_norm=True, ratio=4, input_size=32, in_channels=3),
    dict(arch="vgg11_lrn", ratio=8, input_size=96),
    dict(arch="vgg13", batch_norm=True, ratio=2, input_size=96),
    dict(arch="vgg13", in_channels=3, num_classes=1000, input_size=32),
    dict(arch="vgg16_c", ratio=4, input_size=32, in_channels=3, num_classes=1000),
    dict(arch="vgg16_c", batch_norm=True, ratio=2, input_size=224),
    dict(arch="vgg16", in_channels=3, num_classes=1000),  # the zoos' VGG-16: 138,357,544
    dict(arch="vgg16", batch_norm=True, ratio=8, input_size=32),
    dict(arch="vgg19", ratio=4, input_size=224),
    dict(arch="vgg19", batch_norm=True, in_channels=3, num_classes=1000, input_size=96, fc_hidden=512),
    dict(arch=((1, 16), (2, 32), (3, 64)), input_size=40, fc_hidden=64),  # a book-style conv_arch, 3 blocks
]


# The network the tests below build for real, once per backend for the module: the classifier 64 wide (4096 wide
# it would hold 17 million parameters, 0.28 GB in four frameworks, for tests of shapes and text; with the VGG-16
# of the refusals below, also 64 wide now, the module's process had peaked 0.65 GB higher).
SMALL = dict(arch="vgg11", batch_norm=True, ratio=4, input_size=32, in_channels=3, fc_hidden=64)


def _id(case):
    return "-".join(f"{k}={v}" if k != "arch" or isinstance(v, str) else "conv_arch" for k, v in case.items())


@pytest.mark.parametrize("case", MATRIX, ids=[_id(c) for c in MATRIX])
def test_shapes_and_counts_equal_the_spec(backend, case):
    net = build_abstract(backend, **case)  # full-size networks: no parameter memory
    s = spec(net.config)
    assert backend.layer_shapes(net, s.config.input_size, s.config.in_channels) == s.trace()
    assert backend.count_params(net) == s.params


def test_book_vgg11_figures(backend):
    net = build_abstract(backend, arch="vgg11")
    shapes = [shape for name, shape in backend.layer_shapes(net, 224) if not name.startswith(("relu", "dropout"))]
    assert shapes == BOOK_VGG11_SHAPES
    assert backend.count_params(net) == BOOK_VGG11_PARAMS


def test_an_abstract_network_is_the_network_without_its_memory(backend, build):
    real, abstract = build(backend, **SMALL), build_abstract(backend, **SMALL)
    assert backend.layer_shapes(abstract, 32, 3) == backend.layer_shapes(real, 32, 3)
    assert backend.layer_params(abstract) == backend.layer_params(real)
    assert sum(backend.layer_params(real).values()) == backend.count_params(real) == spec(real.config).params
    before = resident_mib()
    zoo = build_abstract(backend, arch="vgg16", in_channels=3, num_classes=1000)
    assert backend.count_params(zoo) == 138_357_544  # 528 MiB of float32 parameters, none of them allocated
    assert resident_mib() - before < 64


def test_layer_shapes_batch_and_summary(backend, build):
    net = build(backend, **SMALL)
    assert backend.layer_shapes(net, 32, 3, batch=5)[0] == ("block1", (5, 16, 16, 16))
    text = backend.summary(net, 32, 3)
    assert "block5" in text and "(1, 128, 1, 1)" in text and f"{spec(net.config).params:,}" in text
    assert f"batch-norm statistics (not trained): {spec(net.config).buffers:,}" in text


def test_vgg_block_is_the_framework_container(backend):
    block = backend.vgg_block(3, 2, 8, batch_norm=True)
    kind = adapter(backend).CONTAINER
    assert type(block).__name__ == kind
    with pytest.raises(ConfigError, match="num_convs must be a positive integer"):
        backend.vgg_block(0, 2, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_size=32, in_channels=3), "takes 1-channel input but in_channels=3 was given"),
        (dict(input_size=64, in_channels=1), "built for 32x32 input"),
        (dict(input_size=28, in_channels=1), "minimum is 32"),
    ],
)
def test_layer_shapes_refuses_data_that_does_not_fit(backend, build, kwargs, message):
    net = build(backend, arch="vgg16", batch_norm=True, ratio=8, input_size=32, fc_hidden=64)
    with pytest.raises(ConfigError, match=re.escape(message)):
        backend.layer_shapes(net, **kwargs)


def test_bad_configuration_fails_before_the_framework_builds(backend):
    with pytest.raises(ConfigError, match="minimum is 32"):
        backend.vgg(input_size=28)


def test_every_backend_exports_the_contract_with_identical_signatures(backends):
    reference = backends["torch"]
    for fn in API:
        expected = inspect.signature(getattr(reference, fn))
        for name, module in backends.items():
            assert inspect.signature(getattr(module, fn)) == expected, f"{name}.{fn} differs from torch's"


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("common.cli, common.spec, common.data, common.weights, common.report, common.training", BACKENDS),
        *[(BACKENDS[n][0], [m for m in BACKENDS if m != n]) for n in BACKENDS],
    ],
)
def test_packages_import_only_their_own_framework(package, forbidden):
    frameworks = [BACKENDS[n][1] for n in forbidden]
    code = (
        f"import sys, importlib\nfor p in {package.split(', ')!r}: importlib.import_module(p)\n"
        f"print([f for f in {frameworks!r} if f in sys.modules])"
    )
    for name in BACKENDS:
        if BACKENDS[name][0] in package:
            load_backend(name)
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_forward_pass_matches_the_traced_shape(backend, build):
    net = build(backend, **SMALL)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    logits = forward(backend, net, x)
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (2, 7, 9, 5)], ids=["even", "odd"])
def test_jax_max_pool_has_xlas_own_gradient_bit_for_bit(shape, ties):
    # vgg_jax's 2x2/2 pool computes the gradient of the book's nn.max_pool without XLA's select_and_scatter
    # (docs/jax.md): the same values, to the bit, where a window holds two equal maxima (the first takes it) and
    # where odd rows and columns fall outside every window.
    load_backend("jax")  # skipped without JAX (a failure in CI)
    import flax.linen as nn
    import jax

    from vgg_jax.model import max_pool

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float32) if ties else rng.normal(size=shape).astype(np.float32)
    dy = rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)
    y, back = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
    ours = jax.jit(lambda x, dy: jax.vjp(lambda x: max_pool(x, 2), x)[1](dy)[0])(x, dy)  # compiled, as trained
    assert np.array_equal(np.asarray(max_pool(x, 2)), np.asarray(y))
    assert np.array_equal(np.asarray(ours), np.asarray(back(dy)[0]))
    assert (np.asarray(ours) != 0).sum() == dy.size  # each window's gradient went to one input
