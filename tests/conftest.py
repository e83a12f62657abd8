"""One suite for four backends: tests take the backend under test through the `backend` fixture.

Memory: the whole run stays within a laptop's memory (a few GB). Networks live as long as the module that
builds them (module-scoped fixtures, released at the module's end), TensorFlow's oneDNN allocator is told to
use the system's (its own pool never gives memory back), and networks checked only for shapes and counts are
built without their parameters' memory (``adapters.build_abstract``, the backends' ``abstract_network``).
"""

from __future__ import annotations

import atexit
import gc
import getpass
import importlib.util
import os
import shutil
import sys
import tempfile

# Before TensorFlow is imported (here or in a `vgg` subprocess, which inherits the environment): oneDNN's own
# allocator keeps every block it ever held (1.3 GB after one 224 px VGG-11 is built and dropped).
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
# The suite's own process keeps glibc's default malloc: in-process PyTorch training would otherwise switch it to
# keeping freed memory (common.host.reuse_freed_memory), and the 224 px tests that follow would hold
# 0.5 GB more. `vgg` subprocesses run as a user's do (helpers.ENV leaves this out).
os.environ["VGG_REUSE_FREED_MEMORY"] = "0"
# JAX compiles each step it has not seen (a network, a batch shape) with XLA, seconds each on a CPU, and the suite
# builds the same few networks in many tests and `vgg` subprocesses: they share JAX's own persistent compilation
# cache, in the user's cache folder (~/.cache/vgg/jax-tests; inherited by every process the suite starts), where
# the next run of the suite finds it too, as PyTorch's compiler finds its own below. A cached program is the one
# XLA would compile again (its key holds the program, the JAX and XLA versions and the flags): what a test
# computes does not change. The folder holds a few MB.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_CACHE_HOME, "vgg", "jax-tests")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

# PyTorch's compiler keeps what it compiled (torch.compile) in the system's temporary folder, where the next run
# finds it. Named here before the session's folder below becomes TMPDIR: pytest-xdist's workers start with that
# TMPDIR, and would otherwise compile everything again in a cache of their own.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
)

# Every process the suite starts keeps its temporary files in a folder of the session's, removed at its end: a
# run a test kills on purpose (SIGKILL) cannot remove its own (the launcher's notes folder, TensorFlow's
# autograph sources), and they would stay in /tmp after the suite.
if "VGG_TESTS_TMPDIR" not in os.environ:
    _TMP = tempfile.mkdtemp(prefix="vgg-tests-")
    atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
    os.environ["VGG_TESTS_TMPDIR"] = os.environ["TMPDIR"] = _TMP

import pytest
from helpers import release_memory

import common.bench
from common.backends import BACKENDS, get_backend, is_available

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_backend(name):
    """The backend package, or a skip saying which framework is missing (a failure in CI: nothing is skipped)."""
    if not is_available(name):
        message = f"{BACKENDS[name][3]} is not installed (pip install -e '.[{BACKENDS[name][2]}]')"
        if IN_CI:
            pytest.fail(f"CI must run every backend: {message}")
        pytest.skip(message)
    return get_backend(name)


def load_optional(module: str, extra: str = "onnx"):
    """An optional package the project installs with ``pip install -e '.[EXTRA]'`` (ONNX, ONNX Runtime,
    safetensors), imported; or a skip saying what to install (a failure in CI: nothing is skipped).

    Every optional import in the tests goes through here, never through ``pytest.importorskip``. At a module's
    top level it skips (or fails) the whole module.
    """
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed (pip install -e '.[{extra}]')"
        if IN_CI:
            pytest.fail(f"CI must run every format: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return importlib.import_module(module)


# `make test` runs this suite in two pytest-xdist workers side by side (-n 2), each a lane of whole modules in the
# order below: "processes" holds the modules whose tests mostly start `vgg` processes and wait on them
# (distributed workers, signals, messages, output folders, the page in a browser), "frameworks" those that compute
# in the suite's own process, so that the frameworks' caches grow mostly in one worker. The distributed runs (a
# gigabyte of workers at a time) come first, while both workers are small. The lanes' time and memory, and the
# peaks where a spike of one meets a spike of the other: docs/conformance.md, "Memory and time". A module named in
# neither lane runs at the end of "frameworks".
LANES = {
    "processes": [
        "test_distributed",
        "test_teach",
        "test_cli_messages",
        "test_interruption",
        "test_output_folders",
        "test_resume",
        "test_skeleton",
        "test_data",
        "test_docs",
        "test_metrics",
        "test_option_names",
        "test_spec",
    ],
    "frameworks": [
        "test_recipe",
        "test_api_input",
        "test_blocks",
        "test_device_path",
        "test_optimizers",
        "test_train",
        "test_compile",
        "test_conform",
        "test_files",
        "test_cli",
        "test_models",
    ],
}
_LANE = {module: lane for lane, modules in LANES.items() for module in modules}
_ORDER = {module: i for i, module in enumerate(LANES["processes"] + LANES["frameworks"])}


def pytest_collection_modifyitems(config, items):
    """The modules in the lanes' order (a pytest process without workers runs the one lane, then the other)."""
    items.sort(key=lambda item: _ORDER.get(item.module.__name__, len(_ORDER)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduling by scope with the lane as the scope: each lane is one unit of work, so each runs
    whole, in its order, in a worker of its own. (Its --dist loadgroup would do this from marks, but does not
    reach pytest 9's test ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
            return _LANE.get(module, "frameworks")

    return Lanes(config, log)


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return load_backend(request.param)


@pytest.fixture
def one_peak_product(monkeypatch):
    """The machine's peak from one timed matrix product per precision (after an untimed one), not the best of
    PEAK_REPEATS (ten of a tenth of a second each): measured still, if lower in a busy moment. The quick benches'
    steps (test_cli's QUICK_BENCH) reach a fifth of it at most (2-core AMD EPYC, 2026-12-07: fp32 peak 191 GFLOP/s
    in one product; train_fraction_of_peak 0.19 in PyTorch, 0.06-0.08 elsewhere), far below the 1.5 the test
    allows."""
    monkeypatch.setattr(common.bench, "PEAK_REPEATS", 1)


@pytest.fixture(scope="module")
def backends():
    """Every backend package by name (the module is skipped, or fails in CI, if a framework is missing)."""
    return {name: load_backend(name) for name in BACKENDS}


@pytest.fixture(scope="module")
def torch_backend():
    """The PyTorch backend (the test is skipped, or fails in CI, if PyTorch is missing)."""
    return load_backend("torch")


@pytest.fixture(scope="module")
def tf_backend():
    """The tf.keras backend (the test is skipped, or fails in CI, if TensorFlow is missing)."""
    return load_backend("tf")


@pytest.fixture(scope="module")
def build():
    """Build the network of a backend for a vgg() argument tuple, once per module; dropped at the module's end."""
    nets: dict = {}

    def get(b, **kwargs):
        key = (b.__name__, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in nets:
            nets[key] = b.vgg(**kwargs)
        return nets[key]

    yield get
    nets.clear()


# Keras and Gluon networks are cyclic garbage: dropped, they wait for Python's next full collection, and the
# frameworks' threads leave freed memory in their own malloc arenas. Both are released after every test (a test
# starts from what is alive, not from what the last one dropped: a 224 px network's transient peak comes on top).
# A full collection with the four frameworks loaded takes about a second, so what survives a test's release is
# frozen (gc.freeze: left out of later collections) until a shared fixture goes: each test's release then looks
# only at the objects made since.


@pytest.fixture(autouse=True)
def _release_memory_after_each_test():
    yield
    release_memory()
    gc.freeze()


# Once pytest drops a fixture wider than a test, everything is released, frozen objects included, before the next
# fixture is set up: at a module's end (its own fixtures, and the marker below, which every module has), and in
# mid-module where a module-scoped fixture with parameters (test_weights' seven configurations) drops one
# parameter's networks for the next one's. Frozen, those would wait for the module's end: test_weights.py peaked
# at 3.09 GB that way, 2.56 GB with this (docs/conformance.md). One release for all that pytest dropped at once,
# when it set up the next fixture: releasing at the end of each module as well took about a second more per module.
_dropped_a_shared_fixture = False


def _release_all_that_was_frozen() -> None:
    """Collect everything again, frozen objects included, with the programs XLA compiled (JAX keeps them for
    good), give the freed memory back, and freeze what survives."""
    global _dropped_a_shared_fixture
    gc.unfreeze()
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    release_memory()
    gc.freeze()
    _dropped_a_shared_fixture = False


def pytest_fixture_post_finalizer(fixturedef, request):
    global _dropped_a_shared_fixture
    if fixturedef.scope != "function":
        _dropped_a_shared_fixture = True


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if _dropped_a_shared_fixture:
        _release_all_that_was_frozen()
    return (yield)


@pytest.fixture(autouse=True, scope="module")
def _end_of_each_module():
    """Dropped when its module ends, like any module-scoped fixture: the release above then follows every module,
    those without fixtures of their own too."""
    yield
