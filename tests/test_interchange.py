"""The ecosystem's formats: ONNX from each framework's own exporter run by ONNX Runtime, and safetensors weights.

Every export must give its framework's logits in ONNX Runtime, and the exports of the same canonical
weights each other's; damaged or foreign files are one clear error, through the API and the `vgg` command.
"""

import json
import sys

import numpy as np
import pytest
from adapters import forward
from conftest import load_backend, load_optional
from helpers import TINY, random_weights, run_in_process, run_main

from common.arch import make_any_config
from common.backends import BACKENDS
from common.data import fashion_mnist_batches
from common.errors import BackendUnavailable, ConfigError, InputError, WeightsError
from common.report import fmt
from common.spec import spec
from common.weights import make_meta, save_npz, xavier_init

for _module in ("onnx", "onnxruntime", "safetensors"):
    load_optional(_module, "onnx,safetensors")

import onnx  # noqa: E402
import safetensors.numpy  # noqa: E402

from common.interchange import (  # noqa: E402
    INPUT,
    OPSET,
    OUTPUT,
    evaluate_onnx,
    load_onnx,
    load_safetensors,
    meta_strings,
    read_safetensors_meta,
    save_safetensors,
)

TOLERANCE = 1e-4  # max |difference| / max |logit|
# VGG-11 and VGG-16 with and without batch norm, 1 and 3 channels (narrowed 8x, 32 px to stay fast; VGG-11
# without batch norm on 1 channel is the 224 px case), and AlexNet at its smallest input.
CASES = [
    dict(arch="vgg11", ratio=8, input_size=32, in_channels=3, batch_norm=True, fc_hidden=64),
    dict(arch="vgg16", ratio=8, input_size=32, batch_norm=True, fc_hidden=64),
    dict(arch="vgg16", ratio=8, input_size=32, in_channels=3, fc_hidden=64),
    dict(arch="vgg11", ratio=8, input_size=224, fc_hidden=256),
]
# AlexNet at its smallest input, exported by PyTorch's and MXNet's exporters (about 1 GB at their peak). Keras'
# export of AlexNet through tf2onnx peaked at 6 GB here (3.7 GB kept after it), over the suite's 4 GB: it is
# measured in docs/interchange.md, not run here.
ALEXNET = dict(arch="alexnet", input_size=65)
ALEXNET_EXPORTERS = ("torch", "mxnet")
IDS = [
    f"{c['arch']}-{c['input_size']}px-c{c.get('in_channels', 1)}{'-bn' if c.get('batch_norm') else ''}" for c in CASES
]
SMALL = CASES[0]  # batch norm and 3 channels: every kind of tensor, every layout question


def config_of(case):
    c = dict(case)
    arch, size = c.pop("arch"), c.pop("input_size")
    return make_any_config(
        arch,
        c.get("in_channels", 1),
        10,
        size,
        c.get("ratio"),
        c.get("fc_hidden"),
        0.5,
        c.get("batch_norm"),
    )


def real_images(config, n=6):
    """``n`` real Fashion-MNIST test images at the configuration's size; 3 channels: three different images."""
    c = config.in_channels
    _, test = fashion_mnist_batches(n * c, config.input_size, 0, "NCHW", None, None, n * c)
    x, _ = next(iter(test))
    return np.ascontiguousarray(x.reshape(n, c, config.input_size, config.input_size))


def relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def backends():
    return {name: load_backend(name) for name in BACKENDS}


def build(b, config, weights):
    return b.import_weights(b.from_config(config), weights)


def export_all(backends, case, folder):
    """One configuration's canonical weights in every framework, each exported by its own exporter and loaded."""
    config = config_of(case)
    weights, x = random_weights(config), real_images(config)
    out = {}
    for name, b in backends.items():
        net = build(b, config, weights)
        path = b.export_onnx(net, folder / f"{name}.onnx")
        model = load_onnx(path, config)
        out[name] = {"path": path, "model": model, "framework": forward(b, net, x), "onnxruntime": model(x)}
    return config, x, out


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def exported(request, backends, tmp_path_factory):
    return export_all(backends, request.param, tmp_path_factory.mktemp("onnx"))


def check_own_logits(out):
    for name, r in out.items():
        assert np.isfinite(r["onnxruntime"]).all()
        assert relative(r["onnxruntime"], r["framework"]) <= TOLERANCE, name


def check_each_others_logits(out):
    for a in out:
        for b in out:
            assert relative(out[a]["onnxruntime"], out[b]["onnxruntime"]) <= TOLERANCE, (a, b)


def check_signature_and_metadata(config, out):
    for name, r in out.items():
        model = onnx.load(str(r["path"]))
        onnx.checker.check_model(model, full_check=True)
        (images,), (logits,) = model.graph.input, model.graph.output
        dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
        assert (images.name, dims(images)) == (INPUT, ["batch", config.in_channels, *(2 * [config.input_size])])
        assert (logits.name, dims(logits)) == (OUTPUT, ["batch", config.num_classes])
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["config"]) == config.to_dict() and props["source"] == name
        assert props["format"] == "vgg-weights" and props["version"] == "1"
        opset = {o.domain: o.version for o in model.opset_import}[""]
        assert int(props["opset"]) == opset and (opset == OPSET or name == "mxnet")  # MXNet takes no opset
        assert r["model"].batch is None


def test_each_export_gives_its_frameworks_logits_in_onnxruntime(exported):
    check_own_logits(exported[2])


def test_the_three_exports_give_each_others_logits(exported):
    check_each_others_logits(exported[2])


def test_every_export_has_the_agreed_signature_and_metadata(exported):
    check_signature_and_metadata(exported[0], exported[2])


def test_alexnet_exports_hold_to_the_same_checks(backends, tmp_path):
    config, _, out = export_all({n: backends[n] for n in ALEXNET_EXPORTERS}, ALEXNET, tmp_path)
    check_own_logits(out)
    check_each_others_logits(out)
    check_signature_and_metadata(config, out)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_fixed_batch_export_takes_that_batch_only(name, backends, tmp_path):
    b, config = backends[name], config_of(SMALL)
    net = build(b, config, random_weights(config))
    x = real_images(config, 10)
    model = load_onnx(b.export_onnx(net, tmp_path / "fixed.onnx", batch=4))
    assert model.batch == 4 and model.session.get_inputs()[0].shape[0] == 4
    assert relative(model(x[:4]), forward(b, net, x[:4])) <= TOLERANCE
    with pytest.raises(InputError, match="exported for batches of exactly 4, got 3"):
        model(x[:3])
    assert relative(model.logits(x), forward(b, net, x)) <= TOLERANCE  # padded batches


@pytest.mark.parametrize("name", list(BACKENDS))
def test_export_refuses_bad_arguments_before_any_work(name, backends, tmp_path):
    b, config = backends[name], config_of(SMALL)
    net = b.from_config(config)
    with pytest.raises(ConfigError, match="a onnx model file must be named"):
        b.export_onnx(net, tmp_path / "model.npz")
    with pytest.raises(ConfigError, match="batch must be None"):
        b.export_onnx(net, tmp_path / "model.onnx", batch=0)
    with pytest.raises(ConfigError, match="does not exist"):
        b.export_onnx(net, tmp_path / "missing" / "model.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, module", [("torch", "onnxscript"), ("tf", "tf2onnx"), ("mxnet", "onnx.mapping")])
def test_an_exporter_missing_its_package_says_what_to_install(name, module, backends, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without the package imports
    with pytest.raises(BackendUnavailable, match=r"install it with: pip install -e '\.\[onnx\]'|install onnx 1\.18"):
        backends[name].export_onnx(backends[name].from_config(config_of(SMALL)), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# --- safetensors ---------------------------------------------------------------------------------------------


def test_safetensors_carry_the_canonical_weights_between_all_frameworks(backends, tmp_path):
    config = config_of(SMALL)
    weights = random_weights(config)
    for source, b in backends.items():
        path = b.save_weights(build(b, config, weights), tmp_path / f"{source}.safetensors")
        with open(path, "rb") as f:  # the safetensors layout: 8-byte header length, then the JSON header
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        meta = header.pop("__metadata__")
        assert all(isinstance(v, str) for v in meta.values())
        assert json.loads(meta["config"]) == config.to_dict() and meta["source"] == source
        assert {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()} == {
            k: ("F32", a.shape) for k, a in weights.items()
        }
        assert read_safetensors_meta(path)["version"] == 1
        for target, other in backends.items():
            net = other.load_weights(other.from_config(config), path)
            got = other.export_weights(net)
            assert all(np.array_equal(got[k], weights[k]) for k in weights), (source, target)
        assert all(np.array_equal(safetensors.numpy.load_file(path)[k], weights[k]) for k in weights)


def test_npz_stays_the_default_weights_format(backends, tmp_path):
    b, config = backends["mxnet"], config_of(SMALL)
    weights = random_weights(config)
    net = build(b, config, weights)
    for name in ("w.npz", "w.bin"):  # any other name: the .npz of before
        with np.load(b.save_weights(net, tmp_path / name), allow_pickle=False) as z:
            assert "__meta__" in z.files and np.array_equal(z["fc3.weight"], weights["fc3.weight"])
    old = save_npz(tmp_path / "old.npz", config, weights, "torch", "2.1")  # as every earlier version wrote it
    assert np.array_equal(b.export_weights(b.load_weights(b.from_config(config), old))["fc1.bias"], weights["fc1.bias"])


def write_safetensors(path, tensors, meta):
    path.write_bytes(safetensors.numpy.save(tensors, metadata=meta))
    return path


def bad_safetensors(kind, tmp_path):
    """A damaged or foreign .safetensors file of the kind named, and a piece of the one error it must give."""
    config = config_of(SMALL)
    weights = random_weights(config)
    meta = meta_strings(make_meta(config, "torch", "2.13"))
    good = save_safetensors(tmp_path / "good.safetensors", config, weights, "torch", "2.13")
    path = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:-100])
        return path, "is not a readable safetensors file"
    if kind == "corrupted":
        data = bytearray(good.read_bytes())
        data[9:40] = b"\xff" * 31  # inside the JSON header
        path.write_bytes(bytes(data))
        return path, "is not a readable safetensors file"
    if kind == "no-metadata":
        return write_safetensors(path, weights, None), "has no 'vgg-weights' configuration in its metadata"
    if kind == "wrong-dtype":
        return write_safetensors(path, {**weights, "fc3.bias": np.arange(10, dtype=np.int32)}, meta), (
            "tensor fc3.bias has dtype I32"
        )
    if kind == "wrong-shape":
        return write_safetensors(path, {**weights, "fc3.bias": np.zeros(11, np.float32)}, meta), (
            "tensor fc3.bias has shape (11,), but"
        )
    if kind == "extra-tensor":
        return write_safetensors(path, {**weights, "fc4.weight": np.zeros((2, 2), np.float32)}, meta), (
            "1 extra (first fc4.weight)"
        )
    if kind == "missing-tensor":
        return write_safetensors(path, {k: v for k, v in weights.items() if k != "block1.bn1.running_var"}, meta), (
            "1 missing (first block1.bn1.running_var)"
        )
    raise AssertionError(kind)


BAD_SAFETENSORS = [
    "truncated",
    "corrupted",
    "no-metadata",
    "wrong-dtype",
    "wrong-shape",
    "extra-tensor",
    "missing-tensor",
]


@pytest.mark.parametrize("kind", BAD_SAFETENSORS)
def test_a_bad_safetensors_file_is_one_clear_error(kind, tmp_path):
    path, message = bad_safetensors(kind, tmp_path)
    with pytest.raises(WeightsError, match=f"^{path}") as e:
        load_safetensors(path, config_of(SMALL))
    assert message in str(e.value)
    with pytest.raises(WeightsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_safetensors(path)  # without a network to load into, too


@pytest.mark.parametrize("shapes", ["other", "same"])
def test_safetensors_of_another_configuration_are_refused_before_any_tensor_is_read(shapes, tmp_path, monkeypatch):
    """``same``: a configuration whose tensors have the very shapes of the file's (33 px images end in the same
    1x1 map as 32 px ones): only the configuration record can refuse it."""
    config = config_of(SMALL)
    other = config_of(CASES[2]) if shapes == "other" else config_of({**SMALL, "input_size": 33})
    if shapes == "same":
        assert spec(other).param_shapes() == spec(config).param_shapes()
    path = save_safetensors(tmp_path / "w.safetensors", config, random_weights(config), "tf", "2.21")
    opened = []

    class Spy:  # safetensors' reader, recording every tensor read through it
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __getattr__(self, name):
            if name in ("get_tensor", "get_slice"):
                opened.append(name)
            return getattr(self.handle, name)

    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", Spy)
    says = "but this network is vgg16" if shapes == "other" else r"but this network .* \(they differ in input_size\)"
    with pytest.raises(WeightsError, match=f"holds weights for vgg11 .* {says}"):
        load_safetensors(path, other)
    assert opened == []
    load_safetensors(path, config)
    assert "get_tensor" in opened  # the spy sees reads where there are some


# --- bad ONNX files -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_onnx(backends, tmp_path_factory):
    """An export of the small configuration (by MXNet, the quickest exporter) and its bytes."""
    config = config_of(SMALL)
    path = backends["mxnet"].export_onnx(
        build(backends["mxnet"], config, random_weights(config)), tmp_path_factory.mktemp("small") / "m.onnx"
    )
    return config, path


def bad_onnx(kind, small_onnx, tmp_path):
    """A damaged or foreign .onnx of the kind named, and a piece of the one error it must give."""
    _config, good = small_onnx
    path = tmp_path / f"{kind}.onnx"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "is not a readable ONNX model"
    if kind == "corrupted":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        return path, "is not a readable ONNX model"
    model = onnx.load(str(good))
    if kind == "no-metadata":
        del model.metadata_props[:]
        message = "is an ONNX model but not one of this project's"
    elif kind == "other-network":  # the metadata of another configuration on this graph
        other = config_of(CASES[3])
        onnx.helper.set_model_props(model, meta_strings(make_meta(other, "mxnet", "1.9.1")))
        message = "is a graph of another network: images ['batch', 3, 32, 32]"
    else:
        raise AssertionError(kind)
    onnx.save(model, str(path))
    return path, message


@pytest.mark.parametrize("kind", ["truncated", "corrupted", "no-metadata", "other-network"])
def test_a_bad_onnx_file_is_one_clear_error(kind, small_onnx, tmp_path):
    path, message = bad_onnx(kind, small_onnx, tmp_path)
    with pytest.raises(WeightsError, match=f"^{path}") as e:
        load_onnx(path)
    assert message in str(e.value)


def test_an_onnx_model_of_another_configuration_is_refused(small_onnx):
    _, path = small_onnx
    with pytest.raises(WeightsError, match="holds weights for vgg11 .* but this network is vgg16"):
        load_onnx(path, config_of(CASES[2]))
    model = load_onnx(path)
    with pytest.raises(InputError, match="has 1 channel"):
        model(np.zeros((2, 1, 32, 32), np.float32))


# --- the `vgg` command ----------------------------------------------------------------------------------------


def test_vgg_command_bad_files_are_one_line_and_a_non_zero_exit(small_onnx, tmp_path, capsys):
    onnx_file, onnx_message = bad_onnx("truncated", small_onnx, tmp_path)
    st_file, st_message = bad_safetensors("extra-tensor", tmp_path)
    foreign, foreign_message = bad_onnx("no-metadata", small_onnx, tmp_path)
    for args, message in [
        (["evaluate", onnx_file], onnx_message),
        (["evaluate", foreign], foreign_message),
        (["convert", st_file, tmp_path / "w.npz"], st_message),
        (["convert", small_onnx[1], tmp_path / "w.npz"], "is an ONNX model: ONNX is a format to export to"),
    ]:
        done = run_in_process(capsys, *args)
        assert done.returncode != 0, args
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_vgg_evaluate_runs_an_onnx_model_in_onnxruntime(backends, tmp_path, capsys):
    config = config_of(TINY)
    save_npz(tmp_path / "w.npz", config, xavier_init(config, 2), "torch", "")  # seed 2: three classes predicted
    run_main(capsys, "convert", tmp_path / "w.npz", tmp_path / "m.onnx", "--backend", "mxnet")
    out = run_main(capsys, "evaluate", tmp_path / "m.onnx", "--test-limit", "500")
    assert "in ONNX Runtime: test acc" in out and "mx.onnx.export_model, opset" in out
    framework = run_main(capsys, "evaluate", tmp_path / "w.npz", "--backend", "torch", "--test-limit", "500")
    assert out.split("test acc ")[1].split()[0] == framework.split("test acc ")[1].split()[0]
    _, test = fashion_mnist_batches(500, 32, 0, "NCHW", None, None, 500)
    x, _y = next(iter(test))
    predictions = load_onnx(tmp_path / "m.onnx")(x).argmax(axis=1)
    assert len(set(predictions.tolist())) > 2  # the accuracies agree on varied predictions, not on one class
    assert evaluate_onnx(load_onnx(tmp_path / "m.onnx"), test) == float(out.split("test acc ")[1].split()[0])


def test_vgg_convert_every_direction_keeps_the_logits(backends, tmp_path, capsys):
    """Every source format to every destination, .onnx included: the same weights, or the same logits.

    The exporters are held to their frameworks above; here MXNet's, the quickest, writes every .onnx: the default
    exporter of the files MXNet saved, asked for with --backend for the others.
    """
    from common.interchange import read_model

    config = config_of(SMALL)
    weights, x = random_weights(config), real_images(config)
    reference = forward(backends["torch"], build(backends["torch"], config, weights), x)
    sources = {
        "pt": backends["torch"].save_model(build(backends["torch"], config, weights), tmp_path / "src.pt"),
        "h5": backends["tf"].save_model(build(backends["tf"], config, weights), tmp_path / "src.weights.h5"),
        "params": backends["mxnet"].save_model(build(backends["mxnet"], config, weights), tmp_path / "src.params"),
        "npz": save_npz(tmp_path / "src.npz", config, weights, "mxnet", ""),
        "safetensors": save_safetensors(tmp_path / "src.safetensors", config, weights, "mxnet", ""),
    }
    suffixes = [".pt", ".weights.h5", ".params", ".npz", ".safetensors", ".onnx"]
    for src_name, src in sources.items():
        for suffix in (s for s in suffixes if not src.name.endswith(s)):  # every other format
            dst = tmp_path / f"from-{src_name}{suffix}"
            exporter = ["--backend", "mxnet"] if suffix == ".onnx" and src_name in ("pt", "h5") else []
            said = run_main(capsys, "convert", src, dst, *exporter)
            assert f"-> {dst}" in said and (suffix != ".onnx" or "exported by MXNet Gluon" in said)
            if suffix == ".onnx":
                assert relative(load_onnx(dst, config)(x), reference) <= TOLERANCE, dst
            else:
                got_config, got, _ = read_model(dst)
                assert got_config == config and all(np.array_equal(got[k], weights[k]) for k in weights), dst


def test_vgg_bench_adds_onnxruntime_as_a_fourth_executor(backends, tmp_path, capsys):
    args = ["--resize", "32", "--ratio", "8", "--batch-size", "16", "--steps", "2", "--repeats", "1"]
    out = run_main(capsys, "bench", "--backends", "onnxruntime", *args, "--json", tmp_path / "bench.json")
    row = json.loads((tmp_path / "bench.json").read_text())["onnxruntime"]
    assert row["framework"] == "ONNX Runtime" and row["exporter"] == "PyTorch" and row["opset"] == OPSET
    assert row["infer"] > 0 and fmt(row["infer"]) in out.split("ONNX Runtime")[1]  # the row printed
