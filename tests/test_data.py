"""The real Fashion-MNIST: found, verified, read, resized and batched the same way for every backend."""

import gzip
import os
import re
import shutil

import numpy as np
import pytest
from adapters import adapter
from conftest import load_backend
from helpers import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.data import (
    FILES,
    Batches,
    fashion_mnist_batches,
    find_files,
    load_fashion_mnist,
    read_file,
    read_idx,
    resize_images,
    resize_matrix,
)
from common.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data():
    return load_fashion_mnist()


def test_real_dataset_counts_shapes_and_labels(data):
    assert data.train_images.shape == (60_000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10_000, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.train_images.max() == 255 and data.train_images.min() == 0


def test_batches_are_scaled_resized_and_in_layout(data):
    train, test = fashion_mnist_batches(64, resize=40, layout="NHWC", test_limit=100)
    x, y = next(iter(train))
    assert x.shape == (64, 40, 40, 1) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == np.int64 and len(test) == 2 and test.num_examples == 100
    x, _ = next(iter(fashion_mnist_batches(8, layout="NCHW")[1]))
    np.testing.assert_array_equal(x[:, 0], data.test_images[:8] / np.float32(255))


def test_seed_fixes_the_order_and_epochs_differ(data):
    a = Batches(data.train_images, data.train_labels, 128, True, seed=3)
    b = Batches(data.train_images, data.train_labels, 128, True, seed=3)
    first_a, first_b = [y for _, y in a], [y for _, y in b]
    assert all((p == q).all() for p, q in zip(first_a, first_b, strict=True))
    second = next(iter(a))[1]
    assert not (second == first_a[0]).all()  # the next epoch is another permutation
    assert not (next(iter(Batches(data.train_images, data.train_labels, 128, True, seed=4)))[1] == first_a[0]).all()
    assert sorted(np.concatenate(first_a).tolist()) == sorted(data.train_labels.tolist())  # each example once


def test_bilinear_resize_matches_half_pixel_reference():
    m = resize_matrix(4, 8)
    np.testing.assert_allclose(m.sum(axis=1), 1, rtol=1e-6)
    x = np.array([[0, 1, 2, 3]], dtype=np.float32)
    np.testing.assert_allclose(x @ m.T, [[0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]], rtol=1e-6)
    img = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    assert resize_images(img, 224).shape == (3, 224, 224)
    np.testing.assert_allclose(resize_images(np.full((1, 28, 28), 0.5, np.float32), 96), 0.5, rtol=1e-6)


def test_resize_agrees_with_pytorch_bilinear():
    load_backend("torch")  # the PyTorch reference
    import torch

    img = np.random.default_rng(1).random((2, 28, 28), dtype=np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(img)[:, None], size=(96, 96), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(resize_images(img, 96), ref, atol=1e-5)


def _copy_dataset(tmp_path, data):
    for path in find_files().values():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_altered_file_is_refused_by_checksum(tmp_path, data):
    folder = _copy_dataset(tmp_path, data)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a label changed: still a valid IDX file
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte.gz is not the published Fashion-MNIST file.*"
        r"truncated or altered.*apt-get install dataset-fashion-mnist",
    ):
        read_file(target)
    assert read_file(target, verify=False)[100 - 8] == raw[100]  # 8-byte header, then the labels


def test_truncated_gzip_is_a_clear_error(tmp_path, data):
    folder = _copy_dataset(tmp_path, data)
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError, match="cannot be read or decompressed.*damaged"):
        read_file(target)


def test_raw_files_are_accepted(tmp_path, data):
    for name, path in find_files().items():
        (tmp_path / name).write_bytes(gzip.decompress(path.read_bytes()))
    assert find_files(tmp_path) == {name: tmp_path / name for name in FILES}
    np.testing.assert_array_equal(read_file(tmp_path / "t10k-labels-idx1-ubyte"), data.test_labels)


def test_missing_files_name_the_places_searched_and_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr("common.data.DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataError) as e:
        find_files()
    text = str(e.value)
    assert "Fashion-MNIST not found" in text and str(tmp_path / "nowhere") in text and ".keras" in text
    assert "apt-get install dataset-fashion-mnist" in text


@pytest.mark.parametrize("how", ["argument", "environment"])
@pytest.mark.parametrize("kind", ["empty", "partial", "missing", "a file"])
def test_a_data_folder_the_user_names_is_used_or_refused(tmp_path, monkeypatch, how, kind):
    """Never the system's copy in place of the folder the user named (data_dir or FASHION_MNIST_DIR)."""
    folder = tmp_path / "data"
    if kind == "a file":
        folder.write_text("not a folder")
    elif kind != "missing":
        folder.mkdir()
    if kind == "partial":
        name, path = next(iter(find_files().items()))
        (folder / path.name).write_bytes(path.read_bytes())
    if how == "environment":
        monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    with pytest.raises(DataError) as e:
        find_files(folder if how == "argument" else None)
    text = str(e.value)
    assert str(folder) in text and "Fashion-MNIST" in text
    assert ("is not a folder" in text) == (kind in ("missing", "a file"))
    if kind == "partial":
        assert "missing: " in text and name not in text.split("missing: ")[1].split(")")[0]


@pytest.mark.parametrize(
    "kind, said",
    [
        ("folder", "is a folder, where a Fashion-MNIST file belongs"),
        ("link", "is a link to {target}, which does not exist, where a Fashion-MNIST file belongs"),
        ("pipe", "is not a regular file (a named pipe or a device?), where a Fashion-MNIST file belongs"),
    ],
)
def test_a_data_file_that_is_no_file_says_what_it_is(tmp_path, kind, said):
    """Three files and, in the fourth's place, something that cannot be read: named for what it is, never
    "missing" (the folder holds the name)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for path in find_files().values():
        (folder / path.name).symlink_to(path)
    name = next(iter(FILES))
    gone = next(folder.glob(f"{name}*"))
    gone.unlink()
    if kind == "folder":
        gone.mkdir()
    elif kind == "link":
        gone.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(gone)
    with pytest.raises(DataError) as e:
        find_files(folder)
    assert str(e.value).startswith(f"{gone} " + said.format(target=tmp_path / "nowhere") + "; put the file itself")


def test_a_run_records_the_data_it_used(tmp_path, data):
    for path in find_files().values():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    train, test = fashion_mnist_batches(64, data_dir=tmp_path, train_limit=64, test_limit=64)
    assert train.origin == test.origin == {"path": str(tmp_path), "sha256": {n: sha for n, (_, sha) in FILES.items()}}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "bad magic number empty"),
        (b"\x01\x02\x08\x01", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown type"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "has 10 bytes but its header (5,) says 13"),
    ],
)
def test_idx_reader_refuses_bad_headers(raw, message):
    with pytest.raises(DataError, match=re.escape(message)):
        read_idx(raw)


def test_bad_batch_arguments():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        fashion_mnist_batches(0)
    with pytest.raises(ConfigError, match="minimum is 32"):
        fashion_mnist_batches(32, resize=28)
    with pytest.raises(ConfigError, match="train_limit must be a positive number"):
        fashion_mnist_batches(32, train_limit=-1)


def test_a_batch_larger_than_memory_is_refused_when_the_stream_is_made(data):
    with pytest.raises(ConfigError, match=r"a batch of 8 images resized to 100000 px needs at least .* lower resize"):
        Batches(data.train_images, data.train_labels, 8, True, resize=100000)  # 298 GiB a batch
    with pytest.raises(ConfigError, match="a batch of 3 images"):  # a batch is never more than the examples
        Batches(data.train_images[:3], data.train_labels[:3], 10**9, True, resize=100000)


def test_every_backend_sees_the_same_batches(backend):
    train, _ = backend.load_data_fashion_mnist(256, resize=32, seed=7, train_limit=2048)
    reference, _ = fashion_mnist_batches(
        256, resize=32, seed=7, train_limit=2048, layout="NHWC" if backend.LAYOUT == "NHWC" else "NCHW"
    )
    to_numpy = adapter(backend).to_numpy
    for (x, y), (rx, ry) in zip(train, reference, strict=True):
        np.testing.assert_array_equal(to_numpy(x), rx)
        np.testing.assert_array_equal(to_numpy(y).astype(np.int64), ry)
    assert len(train) == 8


# --- damaged and hostile files: only the project's own errors ------------------------------------------------------


def _idx(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


_IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@FUZZ
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


def test_a_fashion_mnist_file_that_decompresses_to_gigabytes_is_read_only_past_its_size(tmp_path):
    name = "t10k-labels-idx1-ubyte"
    bomb = tmp_path / f"{name}.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        chunk = bytes(2**20)
        for _ in range(64):  # 64 MiB decompressed, about 64 KB on disk
            f.write(chunk)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(DataError, match=f"more than {FILES[name][0]:,} bytes decompressed"):
        read_file(bomb)
