import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms import v2

from compressbo.compression.data import (
    IMAGENET_CLASSES,
    MNIST_MEAN,
    MNIST_STD,
    ClassFolders,
    ImageFolderSet,
    TensorSet,
    check_fingerprint,
    check_images,
    expected_class_folders,
    load_digits_split,
    load_imagenet_val,
    load_mnist,
    load_train,
    load_validation,
    read_idx,
)
from compressbo.exceptions import DataError, UserInputError


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist(folder, n: int, split: str = "t10k", compress: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


def write_jpeg_folder(root, classes=("n00000002", "n00000001"), per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for wnid in classes:
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


SMALL_TRANSFORM = v2.Compose(
    [v2.PILToTensor(), v2.Resize(20, antialias=True), v2.CenterCrop(16), v2.ToDtype(torch.float32, scale=True)]
)


# ------------------------------------------------------------------ digits


def test_digits_split_shapes_normalization_and_disjointness():
    train, val = load_digits_split(seed=0)
    assert len(train) + len(val) == 1797
    assert len(val) == 540
    assert train.inputs.shape == (len(train), 1, 28, 28) and val.inputs.dtype == torch.float32
    assert train.labels.dtype == torch.int64
    pixels = torch.cat([train.inputs, val.inputs]) * MNIST_STD + MNIST_MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.max() > 0.99
    digits = load_digits()  # train and val partition the whole set
    expected_counts = torch.bincount(torch.as_tensor(digits.target), minlength=10)
    assert torch.equal(torch.bincount(torch.cat([train.labels, val.labels]), minlength=10), expected_counts)
    raw_total = torch.cat([train.inputs, val.inputs]).mul(MNIST_STD).add(MNIST_MEAN).sum() / 28**2 * 8**2 * 16
    assert abs(raw_total.item() / digits.images.sum() - 1) < 0.02  # bilinear resize keeps the mean intensity


def test_digits_split_is_deterministic_and_seeded():
    first, second, other = load_digits_split(seed=0)[1], load_digits_split(seed=0)[1], load_digits_split(seed=1)[1]
    assert torch.equal(first.inputs, second.inputs) and torch.equal(first.labels, second.labels)
    assert not torch.equal(first.inputs, other.inputs)


def test_digits_split_is_stratified():
    train, val = load_digits_split(seed=3, val_fraction=0.3)
    all_counts = torch.bincount(torch.cat([train.labels, val.labels]), minlength=10).double()
    val_counts = torch.bincount(val.labels, minlength=10).double()
    assert torch.all((val_counts - 0.3 * all_counts).abs() <= 1.0)


def test_digits_val_fraction_is_checked():
    with pytest.raises(UserInputError, match="val_fraction"):
        load_digits_split(val_fraction=1.0)


def test_tensor_set_get_and_pinned_flag_on_cpu():
    inputs, labels = torch.randn(10, 3), torch.arange(10)
    data = TensorSet(inputs, labels)
    x, y = data.get(torch.tensor([7, 2]))
    assert torch.equal(x, inputs[[7, 2]]) and torch.equal(y, torch.tensor([7, 2]))
    assert data[3][1] == 3 and len(data) == 10


# ------------------------------------------------------------------ MNIST


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "a.gz", array, compress=True)
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_malformed_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(UserInputError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(UserInputError, match="malformed"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", [".", "raw", "MNIST/raw"])
def test_load_mnist_from_idx_layouts(tmp_path, layout):
    images, labels = write_mnist(tmp_path / layout, n=5, compress=layout == "raw")
    data = load_mnist(tmp_path, "test")
    assert data.inputs.shape == (5, 1, 28, 28)
    assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
    expected = (torch.from_numpy(images).float() / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(data.inputs[:, 0], expected)
    assert len(load_validation("mnist", tmp_path)) == 5


def test_load_train_mnist_reads_train_files(tmp_path):
    write_mnist(tmp_path, n=4, split="train")
    assert len(load_train("mnist", tmp_path)) == 4


def test_missing_mnist_names_expected_files_and_places(tmp_path):
    with pytest.raises(UserInputError, match=r"t10k-images-idx3-ubyte.*MNIST/raw.*allow the download"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(UserInputError, match="data directory"):
        load_validation("mnist")


def test_mnist_with_inconsistent_counts_is_rejected(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(UserInputError, match="malformed"):
        load_mnist(tmp_path)


# ------------------------------------------------------------------ ImageNet


def test_imagenet_folder_classes_follow_sorted_wnids(tmp_path):
    write_jpeg_folder(tmp_path, classes=("n00000002", "n00000001"), per_class=3)
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM)
    assert isinstance(data, ImageFolderSet) and len(data) == 6
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all("n00000001" in p for p in data.paths[:3])
    x, y = data.get(torch.tensor([5, 0]))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and y.tolist() == [1, 0]


def test_imagenet_default_transform_is_standard_eval(tmp_path):
    write_jpeg_folder(tmp_path, classes=("n00000001",), per_class=1, size=(300, 260))
    data = load_validation("imagenet", tmp_path / "val")  # the val folder itself also works
    x, _ = data.get(torch.tensor([0]))
    assert x.shape == (1, 3, 224, 224)
    assert x.min() < -0.5 and x.max() > 0.5  # ImageNet mean/std normalization, not [0, 1]


def test_imagenet_images_are_decoded_once(tmp_path):
    write_jpeg_folder(tmp_path, per_class=3)
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM)
    first, _ = data.get(torch.tensor([0, 1, 2, 3]))
    again, _ = data.get(torch.tensor([3, 2, 1, 0, 4, 5]))
    data.get(torch.arange(6))
    assert data.decodes == 6
    assert torch.equal(first.flip(0), again[:4])


def test_an_unreadable_image_is_a_one_line_error_naming_it(tmp_path):
    write_jpeg_folder(tmp_path, per_class=2)
    broken = sorted((tmp_path / "val").glob("*/*.JPEG"))[1]
    broken.write_bytes(b"not a jpeg")
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, check=False)  # damaged after the check
    with pytest.raises(UserInputError, match=f"cannot read validation image {broken}.*replace or remove"):
        data.get(torch.arange(4))


def test_imagenet_cache_respects_its_memory_bound(tmp_path):
    write_jpeg_folder(tmp_path, per_class=3)
    one_image = 3 * 16 * 16 * 4
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, cache_bytes=2 * one_image)
    for _ in range(3):
        data.get(torch.arange(6))
    assert data.cached_bytes == 2 * one_image
    assert data.decodes == 6 + 2 * 4  # two images cached, four decoded on every pass


def test_imagenet_missing_or_empty_folder_explains_layout(tmp_path):
    with pytest.raises(UserInputError, match=r"does not exist.*val/<wnid>/\*\.JPEG"):
        load_imagenet_val(tmp_path / "missing")
    (tmp_path / "val").mkdir()
    with pytest.raises(UserInputError, match=r"no ImageNet images.*val/<wnid>"):
        load_imagenet_val(tmp_path)


def test_unknown_dataset_and_imagenet_training_are_rejected():
    with pytest.raises(UserInputError, match="unknown dataset 'cifar'"):
        load_validation("cifar")
    with pytest.raises(UserInputError, match="trains only FC3"):
        load_train("imagenet", "/tmp")


# ------------------------------------------------------------------ ImageNet folder checks and fingerprints


def write_mixed_folder(root, classes=("n00000001", "n00000002", "n00000003")):
    """One class folder per name with a JPEG, a PNG, a grayscale and a CMYK image each."""
    rng = np.random.default_rng(1)
    for wnid in classes:
        folder = root / "val" / wnid
        folder.mkdir(parents=True)
        rgb = Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8))
        rgb.save(folder / "a.JPEG", quality=90)
        rgb.save(folder / "b.png")
        rgb.convert("L").save(folder / "c.jpg")
        rgb.convert("CMYK").save(folder / "d.jpeg")
    return root


def test_jpeg_png_grayscale_and_cmyk_images_all_become_rgb_tensors(tmp_path):
    write_mixed_folder(tmp_path)
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=ClassFolders(3))
    assert len(data) == 12 and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    x, _ = data.get(torch.arange(12))
    assert x.shape == (12, 3, 16, 16) and torch.isfinite(x).all()
    assert torch.equal(x[2, 0], x[2, 1]) and torch.equal(x[2, 1], x[2, 2])  # grayscale: three equal channels


def test_hidden_folders_and_files_are_ignored(tmp_path):
    write_mixed_folder(tmp_path)
    visible = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM).fingerprint()
    hidden = tmp_path / "val" / ".ipynb_checkpoints"
    hidden.mkdir()
    Image.new("RGB", (8, 8)).save(hidden / "x.png")
    (tmp_path / "val" / "n00000001" / ".cache").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "n00000001" / ".cache" / "y.png")
    (tmp_path / "val" / "n00000002" / ".DS_Store").write_bytes(b"\0\1")
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=ClassFolders(3))
    assert len(data) == 12 and data.labels.tolist()[:4] == [0] * 4  # no hidden class 0 shifting the labels
    assert data.fingerprint() == visible


def test_a_train_only_root_is_refused(tmp_path):
    write_mixed_folder(tmp_path, classes=("n00000001",))
    (tmp_path / "val").rename(tmp_path / "train")
    with pytest.raises(DataError, match=r"holds train/ but no val/.*evaluates on the validation images") as info:
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM)
    assert "\n" not in str(info.value) and info.value.setting == "data_dir"


def test_a_class_count_other_than_the_specs_is_refused(tmp_path):
    write_mixed_folder(tmp_path, classes=("n00000001", "n00000002"))
    with pytest.raises(DataError, match=r"holds 2 class folders but the network expects 3 \(1 missing;"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=ClassFolders(3))
    with pytest.raises(DataError, match=r"expects 1 \(1 too many;"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=ClassFolders(1))
    (tmp_path / "val" / "n00000003").mkdir()  # an empty class folder
    with pytest.raises(DataError, match=r"n00000003 holds no image"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=ClassFolders(3))


def test_imagenet_specs_expect_the_1000_wnid_folders(tmp_path):
    from compressbo.compression.spec import load_spec, spec_from_dict

    assert expected_class_folders(load_spec("vgg16")) == ClassFolders(IMAGENET_CLASSES, wnids=True)
    assert expected_class_folders(load_spec("fc3")) is None
    three = spec_from_dict({**load_spec("resnet50").to_dict(), "builder_kwargs": {"num_classes": 3}})
    assert expected_class_folders(three) == ClassFolders(3, wnids=False)

    tiny = Image.new("RGB", (4, 4))
    for i in range(IMAGENET_CLASSES):
        (tmp_path / "val" / f"n{i:08d}").mkdir(parents=True)
        tiny.save(tmp_path / "val" / f"n{i:08d}" / "x.png")
    layout = ClassFolders(IMAGENET_CLASSES, wnids=True)
    data = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=layout)
    assert len(data) == 1000 and data.labels.tolist() == list(range(1000))
    (tmp_path / "val" / "n00000500" / "x.png").rename(tmp_path / "x.png")
    (tmp_path / "val" / "n00000500").rmdir()
    with pytest.raises(DataError, match=r"holds 999 class folders but the network expects 1,000 \(1 missing;.*shift"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=layout)
    (tmp_path / "val" / "images").mkdir()
    (tmp_path / "x.png").rename(tmp_path / "val" / "images" / "x.png")
    with pytest.raises(DataError, match=r"folder\(s\) images that are not ImageNet class folders"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, classes=layout)


def test_a_corrupt_image_is_reported_when_the_pool_is_built(tmp_path):
    write_mixed_folder(tmp_path)
    broken = tmp_path / "val" / "n00000002" / "b.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: its header reads, its chunks do not
    (tmp_path / "val" / "n00000003" / "a.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"cannot read validation image {broken} \(.*\) \(1 more unreadable files\); replace or remove"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM)
    broken.unlink()
    with pytest.raises(DataError, match=r"n00000003/a.JPEG \(UnidentifiedImageError"):
        check_images(sorted(str(p) for p in (tmp_path / "val").glob("*/*")))


def test_the_fingerprint_follows_classes_names_and_sizes(tmp_path):
    write_mixed_folder(tmp_path)
    first = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM).fingerprint()
    assert first["classes"] == ["n00000001", "n00000002", "n00000003"] and first["files"] == 12
    assert load_imagenet_val(tmp_path / "val", transform=SMALL_TRANSFORM).fingerprint() == first
    check_fingerprint(first, first, "here")
    check_fingerprint(None, first, "here")  # a run that recorded none
    image = tmp_path / "val" / "n00000001" / "b.png"
    image.write_bytes(image.read_bytes() + b"\0")  # same names, one size changed
    changed = load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, check=False).fingerprint()
    assert changed["files"] == 12 and changed["sha256"] != first["sha256"]
    with pytest.raises(DataError, match="same number of files, with other names or sizes"):
        check_fingerprint(first, changed, "here")
    for path in (tmp_path / "val" / "n00000002").iterdir():
        path.unlink()
    (tmp_path / "val" / "n00000002").rmdir()
    with pytest.raises(DataError, match=r"not the data this run was made with \(class\(es\) n00000002 missing; 8 files instead of 12\)"):
        load_imagenet_val(tmp_path, transform=SMALL_TRANSFORM, fingerprint=first)
    digits = load_validation("digits")
    assert digits.fingerprint() == load_validation("digits").fingerprint() and digits.fingerprint()["files"] == 540
    with pytest.raises(DataError, match="not the data this run was made with"):
        load_validation("digits", fingerprint={**digits.fingerprint(), "sha256": "0" * 64})
