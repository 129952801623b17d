"""Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files, MIT licence)."""

import gzip
import os

import numpy as np

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Mean and standard deviation of the training images' pixels scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split):
    """Images uint8 [N, 28, 28] and labels uint8 [N] of 'train' or 't10k'."""
    x = _read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
    y = _read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz"))
    return x, y


def normalize(x):
    """uint8 [N, 28, 28] to float32 [N, 1, 28, 28], as the models expect."""
    return ((x.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]
