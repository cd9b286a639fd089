"""minidiff.data: the embedded digits, the MNIST IDX loader, splitting and seeded minibatches."""

from __future__ import annotations

import csv
import gzip
import io
import struct
from importlib import resources

import numpy as np
import pytest
import scipy.ndimage

import minidiff as md
from minidiff import data
from minidiff.data import digits as digits_module

# Class counts of the 1,797 digits (the UCI test set as scikit-learn ships it), 0 through 9.
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def read_csv_independently():
    blob = resources.files("minidiff.data").joinpath("digits.csv.gz").read_bytes()
    rows = list(csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(blob)))))
    table = np.array(rows, dtype=np.int64)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64]


# ----------------------------------------------------------------------------- the embedded digits
def test_digits_shapes_ranges_and_labels():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and str(x.dtype) == "float32"
    assert y.shape == (1797,) and str(y.dtype) == "int64"
    a = x.numpy()
    assert a.min() == 0.0 and a.max() == 1.0
    assert np.bincount(y.numpy()).tolist() == DIGIT_COUNTS and data.N_DIGITS == 1797
    pixels, labels = read_csv_independently()
    np.testing.assert_allclose(a[:, 0], pixels / 16.0, rtol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)
    flat, _ = data.load_digits(flatten=True, dtype="float64")
    assert flat.shape == (1797, 64) and str(flat.dtype) == "float64"
    np.testing.assert_allclose(flat.numpy(), (pixels / 16.0).reshape(1797, 64), rtol=1e-15)


def test_digits28_is_a_bilinear_upsampling():
    x8, _ = data.load_digits(dtype="float64")
    x28, y28 = data.load_digits(size=28, dtype="float64")
    assert x28.shape == (1797, 1, 28, 28) and y28.shape == (1797,)
    a8, a28 = x8.numpy()[:, 0], x28.numpy()[:, 0]
    assert a28.min() >= 0.0 and a28.max() <= 1.0
    # the same map as scipy's order-1 zoom (corner-aligned)
    np.testing.assert_allclose(a28, scipy.ndimage.zoom(a8, (1, 3.5, 3.5), order=1), atol=1e-12)
    # corners coincide with the original pixels
    np.testing.assert_allclose(
        a28[:, [0, 0, 27, 27], [0, 27, 0, 27]], a8[:, [0, 0, 7, 7], [0, 7, 0, 7]], atol=1e-12
    )
    # downsampling back by bilinear interpolation stays close (interpolating twice smooths the peaks)
    back = scipy.ndimage.zoom(a28, (1, 8 / 28, 8 / 28), order=1)
    assert back.shape == a8.shape
    assert np.abs(back - a8).mean() < 0.04 and np.abs(back - a8).max() < 0.25
    # and inverting the interpolation matrix (full column rank) recovers the original exactly
    pinv = np.linalg.pinv(digits_module.bilinear_matrix(28, 8))
    np.testing.assert_allclose(np.einsum("ia,nab,jb->nij", pinv, a28, pinv), a8, atol=1e-10)
    flat, _ = data.load_digits(size=28, flatten=True)
    assert flat.shape == (1797, 784) and str(flat.dtype) == "float32"


def test_digits_are_cached_and_validated():
    data.load_digits()
    hits = digits_module._raw.cache_info().hits
    data.load_digits(size=28)
    assert digits_module._raw.cache_info().hits > hits
    a, _ = data.load_digits()
    b, _ = data.load_digits()
    assert not np.shares_memory(a.numpy(), b.numpy())  # each call gets its own array; the cache stays intact
    with pytest.raises(ValueError, match="size must be an int"):
        data.load_digits(size=1)
    with pytest.raises(TypeError, match="floating point"):
        data.load_digits(dtype="int64")


def test_license_ships_with_the_data():
    text = resources.files("minidiff.data").joinpath("LICENSE-digits.txt").read_text()
    for needle in ("CC BY 4.0", "Alpaydin", "Kaynak", "scikit-learn", "Changes"):
        assert needle in text


def test_digits28_runs_through_the_paper_cnn():
    x, y = data.load_digits(size=28)
    model = md.nn.models.cnn()
    logits = model(x[:3])
    assert logits.shape == (3, 10)
    assert md.nn.functional.cross_entropy(logits, y[:3]).shape == ()


# ----------------------------------------------------------------------------- IDX files
def idx_bytes(array, magic=None, dims=None):
    """IDX encoding written here, independently of the loader: header, big-endian sizes, bytes."""
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    magic = (0x08 << 8 | len(dims)) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def write(path, blob, gz=False):
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)
    return path


@pytest.fixture
def mnist_arrays():
    g = np.random.default_rng(0)
    images = g.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = g.integers(0, 10, size=5, dtype=np.uint8)
    return images, labels


def make_folder(tmp_path, images, labels, prefix="train", gz=False, **overrides):
    ext = ".gz" if gz else ""
    write(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", overrides.get("images_blob", idx_bytes(images)), gz)
    write(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", overrides.get("labels_blob", idx_bytes(labels)), gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind,prefix", [("train", "train"), ("test", "t10k")])
def test_mnist_parses_raw_and_gzip(tmp_path, mnist_arrays, gz, kind, prefix):
    images, labels = mnist_arrays
    folder = make_folder(tmp_path, images, labels, prefix, gz)
    x, y = data.load_mnist(folder, kind)
    assert x.shape == (5, 1, 28, 28) and str(x.dtype) == "float32"
    np.testing.assert_allclose(x.numpy()[:, 0], images / 255.0, rtol=1e-6)
    assert x.numpy().min() == 0.0 and x.numpy().max() == 1.0
    assert str(y.dtype) == "int64"
    np.testing.assert_array_equal(y.numpy(), labels)
    flat, _ = data.load_mnist(str(folder), kind, flatten=True, dtype="float64")
    assert flat.shape == (5, 784) and str(flat.dtype) == "float64"


def test_mnist_alternative_file_names(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    write(tmp_path / "train-images.idx3-ubyte", idx_bytes(images))
    write(tmp_path / "train-labels.idx1-ubyte", idx_bytes(labels))
    assert data.load_mnist(tmp_path)[0].shape == (5, 1, 28, 28)


def test_mnist_wrong_magic_number(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    folder = make_folder(
        tmp_path, images, labels, images_blob=idx_bytes(images, magic=2049, dims=(5 * 28 * 28,))
    )
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: magic number 2049.*expected 2051"):
        data.load_mnist(folder)
    folder = make_folder(tmp_path, images, labels, labels_blob=idx_bytes(labels, magic=2051, dims=(5, 1, 1)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: magic number 2051.*expected 2049"):
        data.load_mnist(folder)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_payload(tmp_path, mnist_arrays, gz):
    images, labels = mnist_arrays
    folder = make_folder(tmp_path, images, labels, gz=gz, images_blob=idx_bytes(images)[:-100])
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte.*truncated.*3920 bytes of data, the file has 3820"
    ):
        data.load_mnist(folder)
    folder = make_folder(tmp_path, images, labels, gz=gz, labels_blob=idx_bytes(labels) + b"\0")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*trailing bytes"):
        data.load_mnist(folder)
    folder = make_folder(tmp_path, images, labels, gz=gz, images_blob=idx_bytes(images)[:10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated header"):
        data.load_mnist(folder)


def test_mnist_truncated_gzip_stream(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    make_folder(tmp_path, images, labels, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: not a readable gzip file"):
        data.load_mnist(tmp_path)


def test_mnist_mismatched_counts(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    folder = make_folder(tmp_path, images, labels[:4])
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte holds 5 images but .*train-labels-idx1-ubyte holds 4"
    ):
        data.load_mnist(folder)


def test_mnist_wrong_dimensions(tmp_path, mnist_arrays):
    images, labels = mnist_arrays
    folder = make_folder(tmp_path, images[:, :27], labels)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: images are 27 × 28, expected 28 × 28"):
        data.load_mnist(folder)
    x, _ = data.load_mnist(folder, image_size=None)  # accepted when asked
    assert x.shape == (5, 1, 27, 28)
    folder = make_folder(tmp_path, images, labels, images_blob=idx_bytes(np.zeros(0), dims=(5, 0, 28)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: images of 0 × 28 pixels"):
        data.load_mnist(folder, image_size=None)
    bad_type = struct.pack(">I", 0x0803 | 0x07 << 8)  # type code 0x0F is not an IDX type
    with pytest.raises(ValueError, match="not a valid IDX header"):
        write(tmp_path / "junk", bad_type + b"\0" * 12)
        data.read_idx(tmp_path / "junk")


def test_mnist_missing_files(tmp_path, mnist_arrays):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        data.load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no train images file in .*train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    images, labels = mnist_arrays
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(images))
    with pytest.raises(FileNotFoundError, match=r"no test labels file .*t10k-labels-idx1-ubyte\.gz"):
        data.load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="kind must be 'train' or 'test'"):
        data.load_mnist(tmp_path, "valid")


# ----------------------------------------------------------------------------- splitting and batches
def ids(n=103):
    """x holds each sample's index (twice, to check rows stay whole), y the index too."""
    i = np.arange(n)
    return md.tensor(np.stack([i, i], axis=1), dtype="float64"), md.tensor(i)


def test_train_test_split():
    x, y = ids()
    xtr, xte, ytr, yte = data.train_test_split(x, y, test_fraction=0.2, seed=0)
    assert xtr.shape == (82, 2) and xte.shape == (21, 2) and ytr.shape == (82,) and yte.shape == (21,)
    np.testing.assert_array_equal(xtr.numpy()[:, 0], ytr.numpy())  # pairs stay aligned
    np.testing.assert_array_equal(xte.numpy()[:, 1], yte.numpy())
    assert sorted(ytr.tolist() + yte.tolist()) == list(range(103))  # disjoint and complete
    assert ytr.tolist() != list(range(82))  # shuffled
    again = data.train_test_split(x, y, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again[3].numpy(), yte.numpy())
    other = data.train_test_split(x, y, test_fraction=0.2, seed=1)
    assert other[3].tolist() != yte.tolist()
    with pytest.raises(ValueError, match="test_fraction"):
        data.train_test_split(x, y, test_fraction=1.0)
    with pytest.raises(ValueError, match="same number of samples"):
        data.train_test_split(x, y[:5])


def epoch_ids(loader):
    out = []
    for xb, yb in loader:
        np.testing.assert_array_equal(xb.numpy()[:, 0], yb.numpy())
        out.append(yb.tolist())
    return out


def test_batches_cover_every_sample_once_per_epoch():
    x, y = ids(103)
    loader = data.batches(x, y, 10, seed=0, drop_last=False)
    assert len(loader) == 11
    e1 = epoch_ids(loader)
    assert [len(b) for b in e1] == [10] * 10 + [3]
    assert sorted(sum(e1, [])) == list(range(103))
    e2 = epoch_ids(loader)
    assert sorted(sum(e2, [])) == list(range(103)) and e2 != e1  # a new order each epoch
    assert loader.epoch == 2

    dropping = data.batches(x, y, 10, seed=0)
    assert len(dropping) == 10
    seen = sum(epoch_ids(dropping), [])
    assert len(seen) == 100 and len(set(seen)) == 100


def test_batches_are_reproducible():
    x, y = ids(50)
    a, b = data.batches(x, y, 8, seed=3), data.batches(x, y, 8, seed=3)
    assert [epoch_ids(a) for _ in range(3)] == [epoch_ids(b) for _ in range(3)]
    c = data.batches(x, y, 8, seed=4)
    assert epoch_ids(c) != epoch_ids(data.batches(x, y, 8, seed=3))
    in_order = data.batches(x, y, 8, shuffle=False, drop_last=False)
    assert sum(epoch_ids(in_order), []) == list(range(50))
    stream = data.Batches(x, y, 8, seed=3).forever()
    first_two_epochs = [next(stream)[1].tolist() for _ in range(12)]
    assert first_two_epochs == sum(epoch_ids_twice(x, y), [])
    assert [yb.tolist() for _, yb in data.Batches(x, y, 8, seed=3).next_epoch()] == epoch_ids(
        data.batches(x, y, 8, seed=3)
    )


def epoch_ids_twice(x, y):
    loader = data.batches(x, y, 8, seed=3)
    return [epoch_ids(loader), epoch_ids(loader)]


def test_batches_errors():
    x, y = ids(10)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        data.batches(x, y, 0)
    with pytest.raises(ValueError, match="larger than the 10 samples"):
        data.batches(x, y, 11)
    with pytest.raises(ValueError, match="same number of samples"):
        data.batches(x, y[:3], 2)
    assert len(data.batches(x, y, 11, drop_last=False)) == 1
