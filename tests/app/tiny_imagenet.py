"""A small ImageNet-layout problem for end-to-end tests: a tiny conv net and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

CLASSES = ("n01440764", "n01443537", "n01484850")


def tiny_net(num_classes: int = 3) -> nn.Module:
    """Two 3x3 convolutions and a linear head on 3 x 224 x 224 inputs (a few kFLOPs per pixel)."""
    return nn.Sequential(
        nn.AvgPool2d(8),
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def write_spec(path: Path, num_classes: int = len(CLASSES)) -> Path:
    """A spec of :func:`tiny_net` naming ``num_classes`` ImageNet-layout classes."""
    path.write_text(
        f'name = "tiny"\nbuilder = "{__name__}:tiny_net"\nbuilder_kwargs = {{ num_classes = {num_classes} }}\n'
        'weights = "random"\ndataset = "imagenet"\ninput_size = [3, 224, 224]\nmethod = "tucker2"\n'
        'layers = ["1", "3"]\n'
    )
    return path


def write_folder(root: Path, classes=CLASSES, per_class: int = 4, seed: int = 0) -> Path:
    """``root/val/<class>/`` with JPEG, PNG, grayscale and CMYK images in turn."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / "val" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
            kind = i % 4
            if kind == 0:
                image.save(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
            elif kind == 1:
                image.save(folder / f"ILSVRC2012_val_{i:08d}.png")
            elif kind == 2:
                image.convert("L").save(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
            else:
                image.convert("CMYK").save(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root
