"""Trains weft's default featurizer: a small CIFAR-style ResNet on Fashion-MNIST classes
0-4 only (classes 5-9 are kept unseen for the transfer-learning demonstration), and
exports it with torch.onnx.export (opset 17) with two outputs, `logits` and `features`
(the pooled layer before the classifier).

Run once, not in CI:  python train_torch.py  (writes fashion_resnet.onnx and train_log.txt)
"""

import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import fashion_data

SEED = 0
EPOCHS = 8
PRETRAIN_CLASSES = [0, 1, 2, 3, 4]
WIDTHS = (24, 48, 96)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class FashionResNet(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        w1, w2, w3 = WIDTHS
        self.conv1 = nn.Conv2d(1, w1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.layer1 = nn.Sequential(Block(w1, w1, 1), Block(w1, w1, 1))
        self.layer2 = nn.Sequential(Block(w1, w2, 2), Block(w2, w2, 1))
        self.layer3 = nn.Sequential(Block(w2, w3, 2), Block(w3, w3, 1))
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        features = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(features), features


def subset(x, y, classes):
    keep = np.isin(y, classes)
    return fashion_data.normalize(x[keep]), y[keep].astype(np.int64)


def main():
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    log = open("train_log.txt", "w")

    def say(*a):
        line = " ".join(str(v) for v in a)
        print(line)
        log.write(line + "\n")
        log.flush()

    xtr, ytr = subset(*fashion_data.load("train"), PRETRAIN_CLASSES)
    xte, yte = subset(*fashion_data.load("t10k"), PRETRAIN_CLASSES)
    say(f"torch {torch.__version__}; classes {PRETRAIN_CLASSES}; train {len(xtr)}, test {len(xte)}; widths {WIDTHS}")
    model = FashionResNet(len(PRETRAIN_CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = EPOCHS * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt))
        t0 = time.time()
        total = 0.0
        for i in range(len(xt) // 128):
            idx = perm[i * 128:(i + 1) * 128]
            xb = xt[idx]
            # light augmentation: random horizontal flips and 2-pixel shifts
            if True:
                flip = torch.rand(len(xb)) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                dx, dy = np.random.randint(-2, 3, size=2)
                xb = torch.roll(xb, shifts=(int(dy), int(dx)), dims=(2, 3))
            loss = F.cross_entropy(model(xb)[0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(model, xte, yte)
        say(f"epoch {epoch + 1}/{EPOCHS}: loss {total / (len(xt) // 128):.4f}, test accuracy {acc * 100:.2f}% ({time.time() - t0:.0f} s)")
    model.eval()
    say(f"final test accuracy on classes 0-4: {evaluate(model, xte, yte) * 100:.2f}%")
    torch.onnx.export(
        model, torch.from_numpy(xte[:1]), "fashion_resnet.onnx", dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits", "features"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
    )
    say("exported fashion_resnet.onnx")


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 500]))[0].argmax(1) for i in range(0, len(x), 500)])
    return (pred.numpy() == y).mean()


if __name__ == "__main__":
    sys.exit(main())
