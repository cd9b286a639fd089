"""``minidiff train --data-dir DIR``: real MNIST from its four IDX files, and every way those files can be
wrong (missing, truncated, of the wrong kind, out-of-range labels) refused in one line before training.

The IDX files are small ones written here into ``tmp_path`` (nothing is ever downloaded), encoded by a
writer of their own, independent of the loader.
"""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from minidiff import data
from minidiff.cli import main

N_TRAIN, N_TEST = 40, 12


def idx_bytes(array, magic=None) -> bytes:
    """An IDX file: magic (0x0000 08 ndim, or ``magic``), big-endian sizes, unsigned bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def mnist_folder(folder, gz=False, train_labels=None, **blobs):
    """The four MNIST files in ``folder`` (random images; labels 0…9 unless given); ``blobs`` replaces
    a file's bytes by name (``train_images``, ``t10k_labels``…)."""
    g = np.random.default_rng(1)
    sets = {
        "train": (g.integers(0, 256, (N_TRAIN, 28, 28)), g.integers(0, 10, N_TRAIN)),
        "t10k": (g.integers(0, 256, (N_TEST, 28, 28)), g.integers(0, 10, N_TEST)),
    }
    if train_labels is not None:
        sets["train"] = (sets["train"][0], train_labels)
    for prefix, (images, labels) in sets.items():
        for what, idx, array in (("images", "idx3", images), ("labels", "idx1", labels)):
            blob = blobs.get(f"{prefix}_{what}", idx_bytes(array))
            path = folder / f"{prefix}-{what}-{idx}-ubyte{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(blob) if gz else blob)
    return folder


@pytest.fixture
def no_training(monkeypatch):
    from minidiff.bench import training

    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the data was checked")

    monkeypatch.setattr(training, "train", forbidden)


def usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidiff train: error: argument --"), err
    return lines[0]


TRAIN = ["train", "--model", "logreg", "--method", "sgd", "--steps", "2", "--batch", "8", "--lr", "0.1"]


@pytest.mark.parametrize("gz", [False, True])
def test_train_reads_mnist_from_a_folder(tmp_path, capsys, gz):
    folder = mnist_folder(tmp_path, gz=gz)
    out = tmp_path / "run.json"
    assert main([*TRAIN, "--data-dir", str(folder), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"(MNIST IDX files in {folder})" in printed
    r = json.loads(out.read_text())
    assert r["data"] == {
        "source": f"MNIST IDX files in {folder}",
        "train_examples": N_TRAIN,
        "test_examples": N_TEST,
    }
    assert len(r["history"]["loss"]) == 2
    assert r["test_accuracy"] * N_TEST == pytest.approx(round(r["test_accuracy"] * N_TEST))  # k / 12


def test_train_defaults_to_the_embedded_digits(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main([*TRAIN, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["data"] == {"source": "embedded digits (28×28)", "train_examples": 1438, "test_examples": 359}


def test_mnist_splits_for_other_callers(tmp_path):
    """``data.load_mnist_splits``: what --data-dir reads, for any caller (bench rfrb, user code)."""
    folder = mnist_folder(tmp_path)
    (x_tr, y_tr), (x_te, y_te) = data.load_mnist_splits(folder, flatten=True, dtype="float64")
    assert x_tr.shape == (N_TRAIN, 784) and x_te.shape == (N_TEST, 784) and str(x_tr.dtype) == "float64"
    assert y_tr.shape == (N_TRAIN,) and y_te.shape == (N_TEST,) and str(y_te.dtype) == "int64"
    assert data.load_mnist_splits(folder)[0][0].shape == (N_TRAIN, 1, 28, 28)


def test_a_missing_file_is_refused_when_parsing(tmp_path, capsys, no_training):
    folder = mnist_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    line = usage_error(capsys, [*TRAIN, "--data-dir", str(folder)])
    assert "--data-dir" in line and "no test labels file" in line and "t10k-labels-idx1-ubyte" in line
    line = usage_error(capsys, [*TRAIN, "--data-dir", str(tmp_path / "nowhere")])
    assert "folder not found" in line


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_file_is_refused_before_training(tmp_path, capsys, no_training, gz):
    blob = idx_bytes(np.zeros((N_TRAIN, 28, 28)))[:-100]
    folder = mnist_folder(tmp_path, gz=gz, train_images=blob)
    line = usage_error(capsys, [*TRAIN, "--data-dir", str(folder)])
    assert "train-images-idx3-ubyte" in line and "truncated" in line


def test_files_of_the_wrong_kind_are_refused(tmp_path, capsys, no_training):
    images = idx_bytes(np.zeros((N_TEST, 28, 28)))
    folder = mnist_folder(tmp_path, t10k_labels=images)  # an images file under the labels' name
    line = usage_error(capsys, [*TRAIN, "--data-dir", str(folder)])
    assert "t10k-labels-idx1-ubyte: magic number 2051" in line and "expected 2049" in line


def test_out_of_range_labels_are_refused(tmp_path, capsys, no_training):
    labels = np.arange(N_TRAIN) % 10
    labels[[3, 7]] = [10, 255]
    folder = mnist_folder(tmp_path, train_labels=labels)
    with pytest.raises(
        ValueError,
        match=r"train-labels-idx1-ubyte: label 10 at index 3 is out of range for 10 classes \(0 … 9\); "
        r"2 of 40 labels",
    ):
        data.load_mnist(folder)
    line = usage_error(capsys, [*TRAIN, "--data-dir", str(folder)])
    assert "train-labels-idx1-ubyte: label 10 at index 3" in line
    _, y = data.load_mnist(folder, classes=None)  # any byte, when asked
    assert y.numpy()[7] == 255
    with pytest.raises(ValueError, match=r"label 3 at index 3 is out of range for 3 classes \(0 … 2\)"):
        data.load_mnist(mnist_folder(tmp_path, train_labels=np.arange(N_TRAIN) % 10), classes=3)


def test_a_batch_larger_than_the_data_is_refused(tmp_path, capsys, no_training):
    folder = mnist_folder(tmp_path)
    line = usage_error(capsys, [*TRAIN[:-4], "--batch", "64", "--data-dir", str(folder)])
    assert line.startswith("minidiff train: error: argument --batch: 64 is more than the 40 training")
