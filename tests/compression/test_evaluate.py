import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from compressbo.compression.data import TensorSet, load_imagenet_val
from compressbo.exceptions import UserInputError
from compressbo.compression.evaluator import DISTILL_VARIANCE_FLOOR, SubsampleEvaluator, binomial_variance, resolve_device
from compressbo.compression.objective import CompressionObjective

CLASSES = 10


def oracle_set(n: int, wrong: int, seed: int = 0) -> TensorSet:
    """One-hot inputs of a 'predicted' class; exactly ``wrong`` labels disagree with it."""
    generator = torch.Generator().manual_seed(seed)
    predicted = torch.randint(CLASSES, (n,), generator=generator)
    labels = predicted.clone()
    flipped = torch.randperm(n, generator=generator)[:wrong]
    labels[flipped] = (labels[flipped] + 1) % CLASSES
    return TensorSet(nn.functional.one_hot(predicted, CLASSES).float(), labels)


def identity_classifier() -> nn.Linear:
    """Predicts the class its one-hot input names: a fixed classifier with known errors."""
    layer = nn.Linear(CLASSES, CLASSES)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(CLASSES))
        layer.bias.zero_()
    return layer


def noisy_classifier(scale: float, seed: int) -> nn.Linear:
    layer = identity_classifier()
    with torch.no_grad():
        layer.weight.add_(scale * torch.randn(CLASSES, CLASSES, generator=torch.Generator().manual_seed(seed)))
    return layer


# ------------------------------------------------------------------ variance of the error


def test_reported_variance_matches_monte_carlo_variance():
    n, p, m, repeats = 20_000, 0.3, 100, 2000
    evaluator = SubsampleEvaluator(oracle_set(n, int(p * n)), device="cpu", seed=1)
    net = identity_classifier()
    estimates = [evaluator.error(net, m) for _ in range(repeats)]
    errors = np.array([e.error for e in estimates])
    reported = np.mean([e.variance for e in estimates])
    # finite-population factor (N - m) / (N - 1) = 0.995 here: negligible
    assert errors.mean() == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / m / repeats))
    assert errors.var(ddof=1) == pytest.approx(reported, rel=0.12)
    assert reported == pytest.approx(p * (1 - p) / m, rel=0.02)


def test_monte_carlo_variance_on_a_small_set_shows_the_finite_population_factor():
    n, wrong, m, repeats = 200, 40, 100, 2000
    evaluator = SubsampleEvaluator(oracle_set(n, wrong), device="cpu")
    net = identity_classifier()
    estimates = [evaluator.error(net, m) for _ in range(repeats)]
    errors = np.array([e.error for e in estimates])
    reported = np.mean([e.variance for e in estimates])
    assert errors.var(ddof=1) == pytest.approx(reported * (n - m) / (n - 1), rel=0.12)


def test_variance_shrinks_as_one_over_m():
    assert binomial_variance(400, 4000) / binomial_variance(100, 1000) == pytest.approx(0.25, rel=0.01)
    evaluator = SubsampleEvaluator(oracle_set(4000, 800), device="cpu")
    net = identity_classifier()
    small, large = evaluator.full_error(net), None
    assert small == 0.2
    large = np.mean([evaluator.error(net, 1600).variance for _ in range(20)])
    small = np.mean([evaluator.error(net, 100).variance for _ in range(20)])
    assert large / small == pytest.approx(1 / 16, rel=0.15)


@pytest.mark.parametrize("wrong", [0, 50])
def test_variance_is_positive_when_the_error_is_zero_or_one(wrong):
    evaluator = SubsampleEvaluator(oracle_set(50, wrong), device="cpu")
    estimate = evaluator.error(identity_classifier(), 20)
    assert estimate.error == wrong / 50
    assert estimate.variance > 0
    assert estimate.variance == pytest.approx((1 / 22) * (21 / 22) / 20)


def test_batches_do_not_change_the_result():
    data = oracle_set(300, 77)
    small = SubsampleEvaluator(data, device="cpu", batch_size=7, seed=4)
    large = SubsampleEvaluator(data, device="cpu", seed=4)
    net = identity_classifier()
    assert [small.error(net, 200).wrong for _ in range(3)] == [large.error(net, 200).wrong for _ in range(3)]
    assert small.full_error(net) == large.full_error(net) == 77 / 300


# ------------------------------------------------------------------ subsamples


def test_samples_outside_the_set_are_rejected_with_its_size():
    evaluator = SubsampleEvaluator(oracle_set(30, 3), device="cpu")
    with pytest.raises(UserInputError, match="validation set has 30 examples"):
        evaluator.error(identity_classifier(), 31)
    with pytest.raises(UserInputError, match="outside 1..30"):
        evaluator.sample(0)


def test_subsamples_are_fresh_without_replacement_and_reproducible():
    first, twin, other = (SubsampleEvaluator(oracle_set(100, 10), device="cpu", seed=s) for s in (0, 0, 1))
    draws = [first.sample(40) for _ in range(3)]
    assert all(d.unique().numel() == 40 and torch.equal(d, d.sort().values) for d in draws)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert all(torch.equal(d, twin.sample(40)) for d in draws)
    assert not torch.equal(draws[0], other.sample(40))


def test_state_dict_resumes_the_subsample_sequence():
    evaluator = SubsampleEvaluator(oracle_set(100, 10), device="cpu", seed=3)
    evaluator.sample(10)
    state = json.loads(json.dumps(evaluator.state_dict()))
    expected = evaluator.sample(10)
    resumed = SubsampleEvaluator(oracle_set(100, 10), device="cpu")
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(10), expected)


def test_full_error_does_not_advance_the_sequence():
    evaluator = SubsampleEvaluator(oracle_set(100, 10), device="cpu")
    evaluator.full_error(identity_classifier())
    assert evaluator.draws == 0


# ------------------------------------------------------------------ distillation


def test_distill_variance_is_the_standard_error_squared():
    data = oracle_set(500, 0)
    evaluator = SubsampleEvaluator(data, device="cpu", seed=2)
    twin = SubsampleEvaluator(data, device="cpu", seed=2)
    student, teacher = noisy_classifier(0.3, seed=1), identity_classifier()
    estimate = evaluator.distill(student, teacher, 64)
    indices = twin.sample(64)
    with torch.inference_mode():
        per_example = (student(data.inputs[indices]) - teacher(data.inputs[indices])).double().pow(2).mean(1)
        wrong = (student(data.inputs[indices]).argmax(1) != data.labels[indices]).sum().item()
    assert estimate.distance == pytest.approx(per_example.mean().item(), rel=1e-5)
    assert estimate.variance == pytest.approx(per_example.var().item() / 64, rel=1e-5)
    assert estimate.error == wrong / 64


def test_distill_variance_matches_monte_carlo():
    evaluator = SubsampleEvaluator(oracle_set(20_000, 0), device="cpu")
    student, teacher = noisy_classifier(0.5, seed=0), identity_classifier()
    estimates = [evaluator.distill(student, teacher, 50) for _ in range(1500)]
    distances = np.array([e.distance for e in estimates])
    assert distances.var(ddof=1) == pytest.approx(np.mean([e.variance for e in estimates]), rel=0.15)


def test_reference_logits_are_computed_once_per_example():
    evaluator = SubsampleEvaluator(oracle_set(60, 5), device="cpu", batch_size=16)
    teacher = identity_classifier()
    seen = []
    teacher.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    for _ in range(30):
        evaluator.distill(noisy_classifier(0.1, seed=0), teacher, 25)
    assert sum(seen) == 60  # every example once, however many draws overlap


def test_identical_networks_have_zero_distance_and_floored_variance():
    evaluator = SubsampleEvaluator(oracle_set(40, 4), device="cpu")
    estimate = evaluator.distill(identity_classifier(), identity_classifier(), 10)
    assert estimate.distance == 0 and estimate.variance == DISTILL_VARIANCE_FLOOR


def test_distill_needs_two_samples():
    evaluator = SubsampleEvaluator(oracle_set(40, 4), device="cpu")
    with pytest.raises(UserInputError, match="at least 2"):
        evaluator.distill(identity_classifier(), identity_classifier(), 1)


# ------------------------------------------------------------------ devices


def test_auto_device_falls_back_to_cpu_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator = SubsampleEvaluator(oracle_set(20, 2), device="auto")
        evaluator.error(identity_classifier(), 10)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert evaluator.device.type == expected
    assert evaluator.batch_size == (1024 if expected == "cuda" else 512)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserInputError, match="no CUDA GPU"):
        resolve_device("cuda:0")


def test_unknown_device_and_bad_batch_size_are_user_errors():
    with pytest.raises(UserInputError, match="unknown device"):
        resolve_device("gpu7")
    with pytest.raises(UserInputError, match="unsupported device"):
        resolve_device("meta")
    with pytest.raises(UserInputError, match="batch size"):
        SubsampleEvaluator(oracle_set(20, 2), device="cpu", batch_size=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_networks_in_other_dtypes_get_inputs_in_their_dtype(dtype):
    evaluator = SubsampleEvaluator(oracle_set(200, 30), device="cpu")
    net = identity_classifier().to(dtype)
    assert evaluator.full_error(net) == 30 / 200
    assert evaluator.logits(net, torch.arange(5)).dtype == torch.float32


def test_amp_on_cpu_keeps_the_prediction():
    evaluator = SubsampleEvaluator(oracle_set(200, 30), device="cpu", amp=True)
    assert evaluator.full_error(identity_classifier()) == 30 / 200


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_evaluation_moves_the_network_and_keeps_the_pool_on_the_device():
    evaluator = SubsampleEvaluator(oracle_set(500, 50), device="cuda")
    net = identity_classifier()
    assert evaluator.error(net, 500).error == 0.1
    assert net.weight.is_cuda and evaluator.dataset.inputs.is_cuda
    assert evaluator.device == net.weight.device  # "cuda" resolved with its index: the pool is resident


# ------------------------------------------------------------------ image folders


def test_imagenet_path_evaluates_and_decodes_each_image_once(tmp_path):
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / wnid / f"{i}.JPEG")
    transform = v2.Compose([v2.PILToTensor(), v2.Resize(16, antialias=True), v2.CenterCrop(16),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)])
    data = load_imagenet_val(tmp_path, transform=transform)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    evaluator = SubsampleEvaluator(data, device="cpu", batch_size=4)
    estimates = [evaluator.error(net, 4) for _ in range(5)]
    full = evaluator.full_error(net)
    with torch.inference_mode():
        inputs = torch.stack([transform(Image.open(p).convert("RGB")) for p in data.paths])
        expected = (net(inputs).argmax(1) != data.labels).float().mean().item()
    assert full == pytest.approx(expected)
    assert all(0 <= e.error <= 1 and e.variance > 0 for e in estimates)
    assert data.decodes == 6


# ------------------------------------------------------------------ objective


class RankCompressor:
    """Truncated-SVD compression of one Linear classifier: theta in (0, 1] -> rank."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.calls = 0

    def compress(self, theta):
        self.calls += 1
        rank = max(1, round(float(theta[0]) * CLASSES))
        u, s, vh = torch.linalg.svd(self.layer.weight.detach())
        first, second = nn.Linear(CLASSES, rank, bias=False), nn.Linear(rank, CLASSES)
        with torch.no_grad():
            first.weight.copy_(s[:rank, None] * vh[:rank])
            second.weight.copy_(u[:, :rank])
            second.bias.copy_(self.layer.bias)
        ratio = 2 * rank * CLASSES / (CLASSES * CLASSES)
        return SimpleNamespace(module=nn.Sequential(first, second), ranks=[rank], ratio=ratio,
                               model_ratio=ratio, flops_ratio=ratio)


def test_objective_combines_ratio_and_error_with_gamma():
    data = oracle_set(400, 40)
    objective = CompressionObjective(RankCompressor(noisy_classifier(0.2, 0)),
                                     SubsampleEvaluator(data, device="cpu", seed=5), gamma=2.0, samples=100)
    twin = SubsampleEvaluator(data, device="cpu", seed=5)
    obs = objective([0.3])
    expected = twin.error(RankCompressor(noisy_classifier(0.2, 0)).compress([0.3]).module, 100)
    assert obs.ranks == [3] and obs.ratio == pytest.approx(0.6) and obs.m == 100
    assert obs.error == expected.error
    assert obs.y == pytest.approx(0.6 + 2.0 * expected.error)
    assert obs.yvar == pytest.approx(4.0 * expected.variance)
    assert obs.seconds_compress >= 0 and obs.seconds_evaluate > 0 and obs.distance is None
    json.dumps(obs.to_dict())


def test_objective_schedule_and_explicit_m_and_resume():
    data = oracle_set(400, 40)
    make = lambda: CompressionObjective(RankCompressor(identity_classifier()),  # noqa: E731
                                        SubsampleEvaluator(data, device="cpu"), samples=lambda i: 50 * (i + 1))
    objective = make()
    assert [objective([1.0]).m for _ in range(3)] == [50, 100, 150]
    assert objective([1.0], m=7).m == 7
    state = json.loads(json.dumps(objective.state_dict()))
    expected = objective([0.5])
    resumed = make()
    resumed.load_state_dict(state)
    again = resumed([0.5])
    assert (again.m, again.error, again.y) == (expected.m, expected.error, expected.y)


def test_objective_distill_and_full_metrics():
    data = oracle_set(400, 40)
    original = identity_classifier()
    objective = CompressionObjective(RankCompressor(original), SubsampleEvaluator(data, device="cpu", seed=7),
                                     objective="distill", gamma=0.5, samples=80, reference=original)
    twin = SubsampleEvaluator(data, device="cpu", seed=7)
    obs = objective([0.4])
    assert obs.distance > 0 and obs.y == pytest.approx(obs.ratio + 0.5 * obs.distance) and obs.yvar > 0
    assert obs.error == twin.error(RankCompressor(original).compress([0.4]).module, 80).error
    full = objective([1.0])
    assert full.distance < 1e-10 and full.y == pytest.approx(2.0)
    assert full.error == twin.error(original, 80).error
    metrics = objective.full_metrics([1.0])
    assert metrics["error"] == metrics["original_error"] == 0.1
    assert metrics["ratio"] == metrics["model_ratio"] == metrics["flops_ratio"] == 2.0 and metrics["ranks"] == [10]
    assert objective.evaluator.draws == 2  # full-set metrics draw nothing


def test_objective_rejects_bad_settings():
    evaluator = SubsampleEvaluator(oracle_set(50, 5), device="cpu")
    compressor = RankCompressor(identity_classifier())
    with pytest.raises(UserInputError, match="validation set has 50"):
        CompressionObjective(compressor, evaluator, samples=51)
    with pytest.raises(UserInputError, match="unknown objective"):
        CompressionObjective(compressor, evaluator, samples=10, objective="loss")
    with pytest.raises(UserInputError, match="reference"):
        CompressionObjective(compressor, evaluator, samples=10, objective="distill")
    with pytest.raises(UserInputError, match="gamma"):
        CompressionObjective(compressor, evaluator, samples=10, gamma=-1)


def test_final_indices_are_a_fixed_seeded_subset():
    evaluator = SubsampleEvaluator(oracle_set(400, 40), device="cpu", seed=3)
    assert torch.equal(evaluator.final_indices(), torch.arange(400)) and torch.equal(evaluator.final_indices(400), torch.arange(400))
    subset = evaluator.final_indices(50)
    evaluator.error(identity_classifier(), 100)  # drawing subsamples does not move it
    assert torch.equal(evaluator.final_indices(50), subset) and subset.unique().numel() == 50
    assert torch.equal(subset, subset.sort().values) and evaluator.draws == 1
    assert not torch.equal(SubsampleEvaluator(oracle_set(400, 40), device="cpu", seed=4).final_indices(50), subset)
    with pytest.raises(UserInputError, match="final_samples 401 is outside 1..400"):
        evaluator.final_indices(401)


def test_sign_test_is_the_exact_mcnemar_test_on_discordant_examples():
    from scipy import stats

    from compressbo.compression.objective import sign_test

    before = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 1, 0], dtype=torch.float64)
    after = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], dtype=torch.float64)
    assert sign_test(before, after) == {"improved": 5, "worsened": 0, "p_value": pytest.approx(1 / 32)}
    one_better = sign_test(torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, 0]))
    assert one_better["improved"] == 1 and one_better["p_value"] == 0.5  # one image is not evidence
    assert sign_test(before, before)["p_value"] == 1.0
    mixed = sign_test(torch.tensor([1.0] * 8 + [0.0] * 2), torch.tensor([0.0] * 8 + [1.0] * 2))
    assert mixed["p_value"] == pytest.approx(stats.binomtest(8, 10, 0.5, alternative="greater").pvalue)


def test_score_gives_per_example_losses_of_the_full_metrics():
    data = oracle_set(400, 40)
    original = identity_classifier()
    objective = CompressionObjective(RankCompressor(original), SubsampleEvaluator(data, device="cpu"), samples=50,
                                     reference=original)
    compressed = objective.compressor.compress([0.5])
    indices = objective.evaluator.final_indices(100)
    scored = objective.score(compressed, indices)
    assert scored.losses.shape == (100,) and scored.metrics["error"] == scored.losses.mean().item()
    assert scored.metrics["samples"] == 100 and scored.metrics["original_error"] == objective.original_error(indices)
    assert objective.full_metrics([0.5], compressed, indices=indices) == scored.metrics
    assert objective.score(compressed, indices, original_error=0.25).metrics["original_error"] == 0.25
