"""Network architectures compressbo ships itself (torchvision provides the rest).

Builders follow torchvision's convention: a plain ``nn.Module`` class plus a function
that builds it, so a spec can name ``compressbo.compression.architectures:fc3`` the way it names
``torchvision.models:vgg16``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FC3", "fc3"]


class FC3(nn.Module):
    """The 784-1000-1000-10 multilayer perceptron of the compression papers.

    Args:
        in_features: Flattened input size (784 for 28x28 images).
        hidden: Width of the two hidden layers.
        num_classes: Number of output classes.

    Shapes:
        input ``batch x C x H x W`` (or ``batch x in_features``), output ``batch x num_classes``.
    """

    def __init__(self, in_features: int = 784, hidden: int = 1000, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, hidden)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


def fc3(*, weights: None = None, num_classes: int = 10, **kwargs) -> FC3:
    """Build FC3 with random initialization.

    Pretrained weights are not a torchvision enum: compressbo's network loader puts a
    state dict in (a ``.pth`` file, or FC3 trained on first use on the digits data).

    Args:
        weights: Must be ``None``; accepted for builder-signature compatibility.
        num_classes: Number of output classes.
        **kwargs: Passed to :class:`FC3`.
    """
    if weights is not None:
        raise ValueError("fc3 has no built-in weights; load a state dict instead")
    return FC3(num_classes=num_classes, **kwargs)
