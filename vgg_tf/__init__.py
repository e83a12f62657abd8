"""VGG (and AlexNet) of *Dive into Deep Learning* in tf.keras (Keras 3 on TensorFlow), behind the common API."""

# TensorFlow's C++ start-up notices go to stderr on every run and bury the training lines: keep warnings and
# errors only, unless the user set TF_CPP_MIN_LOG_LEVEL (read when tensorflow loads). TensorFlow honours the
# variable only once absl's logging is set up; the notices it prints before that (oneDNN's "custom operations
# are on", absl's "All log messages before absl::InitializeLog()") ignore it, so while tensorflow and keras
# load, stderr goes to a file and the lines the variable would hide are dropped from it.
import os as _os
import re as _re
import sys as _sys
import tempfile as _tempfile

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# oneDNN's own allocator keeps every buffer it ever held (1.3 GB after one 224-px VGG-11 is built and dropped);
# the system allocator gives memory back. Unless the user chose otherwise.
_os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")

# An absl log line: severity letter, MMDD, time, thread, file:line]; its severity's rank is "IWEF".index(letter).
_ABSL_LINE = _re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _hidden(line: str, level: int) -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL ``level`` hides this start-up line."""
    if line.startswith(_ABSL_PREAMBLE):
        return level >= 1
    m = _ABSL_LINE.match(line)
    return m is not None and "IWEF".index(m[1]) < level


def _import_quietly() -> None:
    """Import tensorflow and keras with the start-up lines TF_CPP_MIN_LOG_LEVEL hides dropped from stderr."""
    text = _os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    level = int(text) if text.isdigit() else 0
    try:
        saved = -1 if level < 1 or "tensorflow" in _sys.modules else _os.dup(2)
    except OSError:  # no stderr to catch
        saved = -1
    if saved < 0:  # the framework, imported here to choose where its start-up lines go
        import keras
        import tensorflow

        return
    _sys.stderr.flush()
    with _tempfile.TemporaryFile() as caught:
        _os.dup2(caught.fileno(), 2)
        try:
            import keras
            import tensorflow
        finally:
            _sys.stderr.flush()
            _os.dup2(saved, 2)
            _os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _hidden(line, level))
            if kept:
                _sys.stderr.write(kept)
                _sys.stderr.flush()


# TensorFlow Lite's converter imports JAX where it is installed (tensorflow/lite/python/util.py: `try: from jax
# import jit`); vgg_tf uses no TFLite and keeps to its own framework, so JAX stays unimported while TensorFlow
# loads (TFLite's JAX conversion is then off in this process).
_NO_JAX = "jax" not in _sys.modules
if _NO_JAX:
    _sys.modules["jax"] = None  # type: ignore[assignment]  # None there makes an import of it raise ImportError
try:
    _import_quietly()
finally:
    if _NO_JAX:
        del _sys.modules["jax"]

from .blocks import FixedHiddenMLP, MySequential, hand_vgg, tied_mlp  # noqa: E402
from .data import load_data_fashion_mnist, on_device  # noqa: E402
from .export import export_onnx  # noqa: E402
from .model import (  # noqa: E402
    abstract_network,
    alexnet,
    count_params,
    from_config,
    layer_params,
    layer_shapes,
    summary,
    vgg,
    vgg_block,
)
from .train import evaluate_accuracy, get_device, train, try_gpu  # noqa: E402
from .weights import (  # noqa: E402
    export_weights,
    import_weights,
    init_weights,
    load_model,
    load_weights,
    named_parameters,
    save_model,
    save_weights,
    zoo_weights,
)

LAYOUT = "NHWC"
