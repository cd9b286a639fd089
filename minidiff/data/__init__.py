"""Data: the embedded UCI digits, an MNIST IDX loader, splitting and seeded minibatches.

* :func:`load_digits` — 1,797 handwritten digits shipped inside the package (CC BY 4.0, see
  ``LICENSE-digits.txt``), 8×8 or upsampled to 28×28 ("digits28") for MNIST-shaped models;
* :func:`load_mnist` — MNIST from the standard IDX files (raw or gzip) in a folder you give; validated,
  never downloaded;
  :func:`load_mnist_splits` reads the training and test sets at once;
* :func:`train_test_split` and :func:`batches` / :class:`Batches` — seeded splitting and shuffling.

Files are parsed on the host with NumPy; the results are tensors on the requested ``device``.
"""

from .digits import N_DIGITS, load_digits
from .idx import load_mnist, load_mnist_splits, mnist_files, read_idx
from .loader import Batches, batches, train_test_split

__all__ = [
    "load_digits",
    "N_DIGITS",
    "load_mnist",
    "load_mnist_splits",
    "mnist_files",
    "read_idx",
    "train_test_split",
    "batches",
    "Batches",
]
