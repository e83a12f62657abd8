"""The frameworks' own VGG networks — torchvision's, keras.applications, Gluon's model_zoo — run in ours.

Each zoo network is built randomly initialised (nothing is downloaded), every constant tensor in it (zero
biases, identity batch norms) is replaced by random values so that a wrongly mapped tensor changes the
result, and our network loaded with its weights must give the zoo network's logits on real images.
"""

import hashlib

import numpy as np
import pytest
from adapters import forward
from conftest import load_backend
from helpers import in_own_process, release_memory

from common.data import load_fashion_mnist, resize_images
from common.errors import WeightsError
from common.zoo import from_gluon_zoo, from_torchvision, to_torchvision

ZOO = [(arch, bn) for arch in ("vgg11", "vgg13", "vgg16", "vgg19") for bn in (False, True)]
IDS = [f"{arch}{'_bn' if bn else ''}" for arch, bn in ZOO]


def _real_images(size: int) -> np.ndarray:
    """Two real Fashion-MNIST test images at ``size`` px, as three distinct channels (a channel mix-up shows)."""
    x = resize_images(load_fashion_mnist().test_images[:2], size)[:, None]
    return np.concatenate([x, 1.0 - x, 0.5 * x], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def images():
    return _real_images(224)


def _randomise_constants(arrays: dict, seed: int) -> dict:
    """Every tensor whose entries are all equal (zero biases, unit scales) replaced by random values."""
    rng = np.random.default_rng(seed)
    return {
        k: (rng.uniform(0.5, 1.5, a.shape) if a.flat[0] == 1 else rng.normal(0, 0.1, a.shape)).astype(a.dtype)
        if a.size and np.all(a == a.flat[0])
        else a
        for k, a in arrays.items()
    }


def _check_logits(ours: np.ndarray, zoo: np.ndarray):
    assert zoo.shape == ours.shape and np.std(zoo) > 0
    # fp32 through 8-16 convolutions at 224 px in two frameworks: measured <= 2e-6 of the logits' range
    assert np.abs(ours - zoo).max() <= 1e-4 * np.abs(zoo).max(), np.abs(ours - zoo).max()


def _ours(backend, config, weights):
    """Our network of ``config`` with the zoo's canonical ``weights``.

    ``weights`` may be a one-item list, emptied here: then no caller holds the 500 MB while they are imported
    (an import holds up to three more copies at its peak).
    """
    net = backend.vgg(**config.vgg_kwargs())
    return backend.import_weights(net, weights.pop() if isinstance(weights, list) else weights)


# torchvision's VGG, as torchvision.models.vgg writes it (its PyPI wheels are built against CUDA PyTorch, so
# the package itself does not load beside the CPU build): what matters is its layout and its key names.
TORCHVISION_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def torchvision_vgg(arch, batch_norm, num_classes=1000):
    from torch import nn

    layers, in_channels = [], 3
    for v in TORCHVISION_CFGS[arch]:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += (
                [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [conv2d, nn.ReLU(inplace=True)]
            )
            in_channels = v

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=0.5),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG()


# The two full VGG-16s at 224 px come first: each runs alone in a fresh pytest process (helpers.in_own_process),
# and this module's own process is then still small (make test runs this module first in its pytest process,
# before test_weights.py, so nothing the suite built before sits beside that child either).


def test_gluon_model_zoo_vgg16_at_224_px(images, request):
    mxnet = load_backend("mxnet")
    if not in_own_process(request):  # over 3 GB at its peak
        return
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision

    zoo = vision.vgg16()
    zoo.initialize(mx.init.Xavier())
    expected = zoo(mx.nd.array(images)).asnumpy()
    config, weights = mxnet.zoo_weights(zoo)
    del zoo
    release_memory()
    assert config.input_size == 224 and config.flat_features == 25088
    given = [weights]  # the import takes the only copy
    del weights
    _check_logits(forward(mxnet, _ours(mxnet, config, given), images), expected)


def test_a_zoo_network_moves_into_every_backend(images, request):
    """Keras' VGG16 in PyTorch and Gluon too: the zoo weights are canonical, so any backend takes them."""
    tf = load_backend("tf")
    if not in_own_process(request):  # over 3 GB at its peak
        return
    import keras

    zoo = keras.applications.VGG16(weights=None, classifier_activation=None)
    expected = np.asarray(zoo(np.transpose(images, (0, 2, 3, 1)), training=False))
    config, weights = tf.zoo_weights(zoo)
    del zoo
    release_memory()
    torch = load_backend("torch")
    _check_logits(forward(torch, _ours(torch, config, weights), images), expected)
    release_memory()
    mxnet, last = load_backend("mxnet"), [weights]  # the last import takes the only copy
    del weights
    _check_logits(forward(mxnet, _ours(mxnet, config, last), images), expected)


def test_every_torchvision_vgg_layout_is_read_and_written_back():
    """All eight: each depth's convolution count and the batch-norm variants' indices in ``features``, read from
    the shapes alone (no values: the networks are built on the meta device) and written back to the same keys."""
    load_backend("torch")
    import torch as pt

    for arch, bn in ZOO:
        with pt.device("meta"):
            zoo = torchvision_vgg(arch, bn)
        shapes = {k: tuple(v.shape) for k, v in zoo.state_dict().items() if not k.endswith("num_batches_tracked")}
        state = {k: np.broadcast_to(np.float32(1), shape) for k, shape in shapes.items()}  # no memory either
        config, weights = from_torchvision(state)
        assert (config.arch, config.batch_norm, config.in_channels, config.num_classes) == (arch, bn, 3, 1000)
        back = to_torchvision(config, weights)
        assert {k: v.shape for k, v in back.items()} == shapes


# Their values, through our network at 224 px: each depth once, with and without batch norm in turn.
@pytest.mark.parametrize("arch, bn", [("vgg11", False), ("vgg13", True), ("vgg16", False), ("vgg19", True)])
def test_torchvision_vgg_runs_in_ours(arch, bn, images):
    torch = load_backend("torch")
    import torch as pt

    zoo = torchvision_vgg(arch, bn).eval()
    state = _randomise_constants(
        {k: v.numpy() for k, v in zoo.state_dict().items() if not k.endswith("num_batches_tracked")}, seed=1
    )
    zoo.load_state_dict({k: pt.from_numpy(v) for k, v in state.items()}, strict=True)
    with pt.no_grad():
        expected = zoo(pt.from_numpy(images)).numpy()
    config, weights = torch.zoo_weights(zoo)
    assert (config.arch, config.batch_norm, config.in_channels, config.num_classes) == (arch, bn, 3, 1000)
    digests = {k: _digest(v) for k, v in state.items()}  # the zoo's values, without keeping its 500 MB alive
    del zoo, state
    given = [weights]  # the import takes the only copy
    del weights
    net = _ours(torch, config, given)
    _check_logits(forward(torch, net, images), expected)
    # and back: our weights under torchvision's names are the zoo's own values and load strictly into its network
    back = to_torchvision(config, torch.export_weights(net))
    del net
    assert {k: _digest(v) for k, v in back.items()} == digests
    with pt.device("meta"):  # its layout and names, no memory
        shell = torchvision_vgg(arch, bn)
    result = shell.load_state_dict({k: pt.from_numpy(v) for k, v in back.items()}, strict=True, assign=True)
    assert result.unexpected_keys == [] and all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def _digest(a: np.ndarray) -> tuple:
    """An array's dtype, shape and SHA-256 of its bytes (read in place, no copy)."""
    a = np.ascontiguousarray(a)
    return a.dtype.str, a.shape, hashlib.sha256(memoryview(a).cast("B")).hexdigest()


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_keras_applications_vgg_runs_in_ours(arch):
    """Built for 64 px (keras.applications takes any size from 32 px when no ImageNet weights are loaded): fc1
    then reads 2 x 2 x 512 features in H,W,C order, so its rows must still be permuted (at 32 px they would be
    1 x 1). Keras' VGG16 at 224 px: test_a_zoo_network_moves_into_every_backend."""
    tf = load_backend("tf")
    import keras

    x = _real_images(64)
    zoo = getattr(keras.applications, arch.upper())(weights=None, classifier_activation=None, input_shape=(64, 64, 3))
    for layer in zoo.layers:
        if layer.weights:
            arrays = {f"{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(layer.weights)}
            layer.set_weights(list(_randomise_constants(arrays, seed=2).values()))
    expected = np.asarray(zoo(np.transpose(x, (0, 2, 3, 1)), training=False))
    config, weights = tf.zoo_weights(zoo)
    jax = load_backend("jax")  # JAX has no zoo of its own: vgg_jax.zoo_weights reads this one
    jax_config, jax_weights = jax.zoo_weights(zoo)
    del zoo
    assert (config.arch, config.batch_norm, config.num_classes, config.input_size) == (arch, False, 1000, 64)
    assert config.flat_features == 2048
    assert jax_config == config and list(jax_weights) == list(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(jax_weights[name], array, err_msg=name)
    del jax_weights
    _check_logits(forward(tf, _ours(tf, config, weights), x), expected)
    release_memory()
    last = [weights]  # the import takes the only copy
    del weights
    _check_logits(forward(jax, _ours(jax, config, last), x), expected)


@pytest.mark.parametrize("arch, bn", ZOO, ids=IDS)
def test_gluon_model_zoo_vgg_runs_in_ours(arch, bn, images):
    """Gluon sizes its first dense layer on the first batch: built on 32 px images the network is small."""
    mxnet = load_backend("mxnet")
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision

    x = np.ascontiguousarray(images[:, :, ::7, ::7])  # 32 px (every 7th pixel of the 224 px images)
    zoo = vision.get_vgg(int(arch[3:]), batch_norm=bn)
    zoo.initialize(mx.init.Xavier())
    zoo(mx.nd.array(x[:1]))
    params = zoo.collect_params()
    for name, array in _randomise_constants({n: p.data().asnumpy() for n, p in params.items()}, seed=3).items():
        params[name].set_data(mx.nd.array(array))
    expected = zoo(mx.nd.array(x)).asnumpy()
    config, weights = mxnet.zoo_weights(zoo)
    assert (config.arch, config.batch_norm, config.num_classes, config.input_size) == (arch, bn, 1000, 32)
    _check_logits(forward(mxnet, _ours(mxnet, config, weights), x), expected)


def test_zoo_readers_refuse_what_is_not_a_zoo_vgg():
    with pytest.raises(WeightsError, match="'head.weight' is not a key of a torchvision VGG state_dict"):
        from_torchvision({"head.weight": np.zeros((2, 2))})
    with pytest.raises(WeightsError, match="has 3 convolutions; VGG-11/13/16/19 have 8, 10, 13, 16"):
        from_torchvision(
            {f"features.{i}.weight": np.zeros((4, 3, 3, 3)) for i in range(3)}
            | {"classifier.0.weight": np.zeros((10, 4))}
        )
    with pytest.raises(WeightsError, match="not a parameter of a Gluon model_zoo VGG"):
        from_gluon_zoo([("resnet0_stage1_conv0_kernel", np.zeros(3))])
