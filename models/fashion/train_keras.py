"""Trains a small residual CNN with Keras on Fashion-MNIST classes 0-4 and exports it with
tf2onnx (NHWC input, as Keras models are), so weft's import of TensorFlow-exported models
is tested on a real trained network.

Run once, not in CI:  python train_keras.py  (writes fashion_keras.onnx, keras_log.txt)
"""

import numpy as np
import tensorflow as tf
import tf2onnx

import fashion_data

CLASSES = [0, 1, 2, 3, 4]
EPOCHS = 4


def block(x, filters, stride):
    y = tf.keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
    y = tf.keras.layers.BatchNormalization()(y)
    y = tf.keras.layers.ReLU()(y)
    y = tf.keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False)(y)
    y = tf.keras.layers.BatchNormalization()(y)
    if stride != 1 or x.shape[-1] != filters:
        x = tf.keras.layers.Conv2D(filters, 1, stride, use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.ReLU()(tf.keras.layers.Add()([x, y]))


def main():
    tf.keras.utils.set_random_seed(0)
    x, y = fashion_data.load("train")
    xt, yt = fashion_data.load("t10k")
    keep, keep_t = np.isin(y, CLASSES), np.isin(yt, CLASSES)
    # NHWC, normalised like the PyTorch model
    prep = lambda a: fashion_data.normalize(a).transpose(0, 2, 3, 1)
    x, y, xt, yt = prep(x[keep]), y[keep], prep(xt[keep_t]), yt[keep_t]
    inp = tf.keras.Input((28, 28, 1), name="image")
    h = tf.keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(h))
    h = block(h, 16, 1)
    h = block(h, 32, 2)
    h = block(h, 64, 2)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    out = tf.keras.layers.Dense(len(CLASSES), name="logits")(h)
    model = tf.keras.Model(inp, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=128, epochs=EPOCHS, validation_data=(xt, yt), verbose=2)
    _, acc = model.evaluate(xt, yt, verbose=0)
    with open("keras_log.txt", "w") as f:
        f.write(f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}; classes {CLASSES}\n")
        for i, (l, a) in enumerate(zip(hist.history["loss"], hist.history["val_accuracy"])):
            f.write(f"epoch {i + 1}/{EPOCHS}: loss {l:.4f}, test accuracy {a * 100:.2f}%\n")
        f.write(f"final test accuracy on classes 0-4: {acc * 100:.2f}%\n")
    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path="fashion_keras.onnx")
    print("exported fashion_keras.onnx", acc)


if __name__ == "__main__":
    main()
