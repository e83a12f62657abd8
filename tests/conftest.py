"""One suite for three backends: tests take the backend under test through the `backend` fixture."""

from __future__ import annotations

import os

import pytest

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


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return load_backend(request.param)


_NETS: dict = {}


@pytest.fixture(scope="session")
def build():
    """Build (once per session) the network of a backend for a vgg() argument tuple."""

    def get(b, **kwargs):
        key = (b.__name__, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in _NETS:
            _NETS[key] = b.vgg(**kwargs)
        return _NETS[key]

    return get
