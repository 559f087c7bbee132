import pytest
import torch

from compressbo.compression.architectures import FC3, fc3


def test_fc3_shapes_and_parameter_count():
    torch.manual_seed(0)
    net = fc3()
    assert isinstance(net, FC3)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert net(torch.randn(5, 784)).shape == (5, 10)
    expected = 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 10 + 10
    assert sum(p.numel() for p in net.parameters()) == expected


def test_fc3_rejects_builtin_weights():
    with pytest.raises(ValueError, match="state dict"):
        fc3(weights="IMAGENET1K_V1")
