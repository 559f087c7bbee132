import pytest
import torch
import torchvision
from torch import nn

from compressbo.compression.batching import (
    CPU_ACTIVATION_BYTES,
    MAX_BATCH,
    default_batch_size,
    estimated_activation_bytes,
)


def test_the_estimate_is_the_largest_input_plus_output_of_a_layer_plus_the_input():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    # Conv: 3*8*8 in + 8*8*8 out; ReLU: 512 + 512 (the largest); pool: 512 + 128; input 192 elements
    assert estimated_activation_bytes(net, (3, 8, 8), torch.float32) == (512 + 512 + 192) * 4
    assert estimated_activation_bytes(net.double(), (3, 8, 8), torch.float64) == (512 + 512 + 192) * 8


def test_cpu_default_fits_the_activation_budget_and_follows_the_network():
    cpu = torch.device("cpu")
    with torch.device("meta"):  # shapes only: the probe needs no weights
        vgg, resnet = torchvision.models.vgg16(), torchvision.models.resnet50()
    choices = {name: default_batch_size(net, (3, 224, 224), cpu) for name, net in (("vgg16", vgg), ("resnet50", resnet))}
    small = default_batch_size(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), cpu)
    for choice in (*choices.values(), small):
        b = choice.batch_size
        assert b & (b - 1) == 0 and 1 <= b <= MAX_BATCH and not choice.measured  # a power of two
        assert b * choice.bytes_per_example <= CPU_ACTIVATION_BYTES or b == 1
        assert b == MAX_BATCH or 2 * b * choice.bytes_per_example > CPU_ACTIVATION_BYTES  # the largest that fits
    assert choices["vgg16"].bytes_per_example > 20 * 2**20  # 64 x 224 x 224 float32 twice, ~25 MiB
    assert choices["vgg16"].batch_size < choices["resnet50"].batch_size < small.batch_size == MAX_BATCH
    assert "--batch-size overrides it" in choices["vgg16"].describe(cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_default_is_measured_and_fits_free_memory():
    device = torch.device("cuda", torch.cuda.current_device())
    net = torchvision.models.resnet18().to(device).eval()
    choice = default_batch_size(net, (3, 224, 224), device)
    assert choice.measured and choice.batch_size * choice.bytes_per_example <= choice.budget
