"""Writes calib.npy: 256 normalised training images of classes 0-4 (seeded choice), the
calibration set make_package.sh compiles the default model with."""

import sys

import numpy as np

import fashion_data

x, y = fashion_data.load("train")
keep = np.flatnonzero(np.isin(y, [0, 1, 2, 3, 4]))
pick = np.random.default_rng(0).choice(keep, 256, replace=False)
np.save(sys.argv[1] if len(sys.argv) > 1 else "calib.npy", fashion_data.normalize(x[pick]))
