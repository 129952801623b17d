"""Writes samples/*.png: the first test image of each class 0-4 (the classes the default
model was trained on), named <index>_<class>.png, for the demo and the docs."""

import pathlib

import numpy as np
from PIL import Image

import fashion_data

x, y = fashion_data.load("t10k")
out = pathlib.Path(__file__).with_name("samples")
out.mkdir(exist_ok=True)
for c in range(5):
    i = int(np.flatnonzero(y == c)[0])
    name = fashion_data.CLASSES[c].split("/")[0].lower().replace(" ", "-")
    Image.fromarray(x[i]).save(out / f"{i}_{name}.png")
