"""Transfer learning end to end on real data: weft's default featurizer (pretrained on
Fashion-MNIST classes 0-4) featurizes classes 5-9, never seen in pretraining; a head
trained on their train split classifies their test split. Also: the featurizer + head as
one served package, and `weft serve` with no arguments."""

import gzip
import json
import pathlib
import re
import struct
import subprocess

import numpy as np
import tritonclient.grpc as tc

from server_util import Server, encode, fashion_test_images

ROOT = pathlib.Path(__file__).resolve().parent.parent
FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
PKG = ROOT / "models" / "fashion" / "fashion_resnet.weft"
ONNX = ROOT / "models" / "fashion" / "fashion_resnet.onnx"


SPEC = "none,channels=gray,range=0:1,mean=0.2860,std=0.3530"


def featurize(w, model, split, device, tag):
    f, l = w.tmp / f"{tag}_{split}_f.npy", w.tmp / f"{tag}_{split}_l.npy"
    extra = ["--preprocess", SPEC] if str(model).endswith(".onnx") else []
    proc = w("featurize", model, "--device", device, "--images", FASHION / f"{split}-images-idx3-ubyte.gz", "--classes", "5,6,7,8,9",
             "--batch", "128", "-o", f, "--labels-out", l, *extra)
    assert "images/s" in proc.stderr
    return f, l


def test_transfer_to_unseen_classes(w):
    accuracy = {}
    for tag, model, device in (("int8", PKG, "pocl"), ("f32", ONNX, "reference")):
        trf, trl = featurize(w, model, "train", device, tag)
        tef, tel = featurize(w, model, "t10k", device, tag)
        assert np.load(trf).shape == (30000, 96) and set(np.load(trl).tolist()) == {5, 6, 7, 8, 9}
        head = w.tmp / f"{tag}_head.onnx"
        out = w("head", "train", trf, trl, "-o", head, "--seed", "1").stderr
        assert "validation accuracy" in out
        acc = w("head", "eval", head, tef, tel).stdout
        accuracy[tag] = float(re.search(r"accuracy ([0-9.]+)%", acc).group(1)) / 100
    print(f"transfer accuracy on classes 5-9 (test split): int8 PoCL featurizer {accuracy['int8'] * 100:.2f}%, f32 reference featurizer {accuracy['f32'] * 100:.2f}%")
    assert accuracy["int8"] >= 0.90
    assert abs(accuracy["int8"] - accuracy["f32"]) <= 0.01


def test_featurize_full_test_split_reports_progress_and_throughput(w):
    out = w.tmp / "f.npy"
    proc = w("featurize", PKG, "--device", "pocl", "--images", FASHION / "t10k-images-idx3-ubyte.gz", "-o", out)
    assert re.search(r"featurized 10000 images in [0-9.]+ s \([0-9.]+ images/s\)", proc.stderr), proc.stderr
    assert np.load(out).shape == (10000, 96)


def test_featurize_image_directory_with_class_folders(w):
    imgs, labels = fashion_test_images(6)
    for i, (img, label) in enumerate(zip(imgs, labels)):
        d = w.tmp / "imgs" / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.png").write_bytes(encode(img))
    w("featurize", PKG, "--images", w.tmp / "imgs", "-o", w.tmp / "f.npy", "--labels-out", w.tmp / "l.npy")
    assert np.load(w.tmp / "f.npy").shape == (6, 96)
    assert len(np.load(w.tmp / "l.npy")) == 6
    # the class folders' names go beside the labels, into the head and the package's labels
    names = (w.tmp / "l.classes.txt").read_text().split()
    assert names == sorted({f"class{label}" for label in labels})
    head = w.tmp / "h.onnx"
    proc = w("head", "train", w.tmp / "f.npy", w.tmp / "l.npy", "-o", head, "--epochs", "5")
    assert "class names from" in proc.stderr
    pkg = w.tmp / "named.weft"
    w("compile", ONNX, "--head", head, "--precision", "f32", "-o", pkg)
    assert all(n in w("inspect", pkg).stdout for n in names[:5])
    # no model: the embedded default, which is the same package
    proc = w("featurize", "--images", w.tmp / "imgs", "-o", w.tmp / "g.npy")
    assert "embedded default model" in proc.stderr
    assert np.load(w.tmp / "g.npy").tobytes() == np.load(w.tmp / "f.npy").tobytes()


def train_subset(w, n, classes=(5, 6, 7, 8, 9), seed=0):
    """The first `n` images (seeded pick) of `classes` from the Fashion-MNIST train split,
    written as IDX files: images the test split never shares."""
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    pick = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(np.isin(y, classes)), n, replace=False))
    images, labels = w.tmp / "trainsub-images-idx3-ubyte.gz", w.tmp / "trainsub-labels-idx1-ubyte.gz"
    with gzip.open(images, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + x[pick].tobytes())
    with gzip.open(labels, "wb") as f:
        f.write(struct.pack(">II", 2049, n) + y[pick].tobytes())
    return images


def test_featurizer_and_head_served_as_one_package(w, weft):
    # the head learns from train-split images and is scored on test-split images
    trf, trl = w.tmp / "sub_f.npy", w.tmp / "sub_l.npy"
    w("featurize", PKG, "--device", "pocl", "--images", train_subset(w, 3000), "--batch", "128", "-o", trf,
      "--labels-out", trl)
    assert np.load(trf).shape == (3000, 96) and set(np.load(trl).tolist()) == {5, 6, 7, 8, 9}
    head = w.tmp / "head.onnx"
    w("head", "train", trf, trl, "-o", head, "--epochs", "100")
    calib = w.tmp / "calib.npy"
    x, _ = fashion_test_images(64, classes=tuple(range(10)), seed=3)
    np.save(calib, ((x.astype(np.float32) / 255.0 - 0.2860) / 0.3530)[:, None])
    labels = w.tmp / "labels.txt"
    labels.write_text("Sandal\nShirt\nSneaker\nBag\nAnkle boot\n")
    pkg = w.tmp / "transfer.weft"
    w("compile", ONNX, "--head", head, "--calib", calib, "--labels", labels,
      "--preprocess", "none,channels=gray,range=0:1,mean=0.2860,std=0.3530", "-o", pkg)
    s = Server(weft, pkg, "--quiet")
    try:
        c = tc.InferenceServerClient(s.url)
        meta = c.get_model_metadata("transfer")
        assert [o.name for o in meta.outputs] == ["probabilities", "features"]
        cfg = c.get_model_config("transfer").config
        assert json.loads(cfg.parameters["labels"].string_value) == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        imgs, ys = fashion_test_images(50, classes=(5, 6, 7, 8, 9), seed=4)
        hits = 0
        for img, y in zip(imgs, ys):
            inp = tc.InferInput("input", [1], "BYTES")
            inp.set_data_from_numpy(np.array([encode(img)], dtype=np.object_))
            r = c.infer("transfer", [inp])
            p = r.as_numpy("probabilities")
            assert abs(float(p.sum()) - 1.0) < 1e-3 and r.as_numpy("features").shape == (1, 96)
            hits += int([5, 6, 7, 8, 9][int(p.argmax())] == y)
        # weft client shows the head's answer with the label names by default
        out = subprocess.run([str(weft), "client", "--url", s.url, "--image", ROOT / "models" / "fashion" / "samples" / "13_dress.png"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "output 'probabilities'" in out.stdout, out.stdout + out.stderr
        assert any(n in out.stdout for n in ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")), out.stdout
        # the int8 featurizer with a head trained on other images: about 92% on classes 5-9
        # (test_transfer_to_unseen_classes); 50 images, at least 40 right
        print(f"served featurizer + head: {hits} of 50 test-split images right")
        assert hits >= 40, hits
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_serve_without_arguments_serves_the_default_model(weft):
    s = Server(weft, "--quiet")
    try:
        c = tc.InferenceServerClient(s.url)
        assert c.get_model_metadata("fashion").name == "fashion"
        imgs, ys = fashion_test_images(10, seed=7)
        hits = 0
        for img, y in zip(imgs, ys):
            inp = tc.InferInput("input", [1], "BYTES")
            inp.set_data_from_numpy(np.array([encode(img)], dtype=np.object_))
            hits += int(c.infer("fashion", [inp]).as_numpy("logits").argmax() == y)
        assert hits >= 9
    finally:
        code, err = s.stop()
    assert code == 0, err
