"""Data pools: every labelled sample of a data set (scikit-learn, torchvision, Hugging Face)."""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safecompress.data import pretrained

SOURCES = ("sklearn", "torchvision", "huggingface")
SKLEARN_DATASETS = ("digits", "breast_cancer", "wine", "iris")
# Image data sets and the folder under `root` each is read from (the layout torchvision uses).
IMAGE_FOLDERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "fashion_mnist": "FashionMNIST/raw",
    "tinyimagenet": "tiny-imagenet-200",
}
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# Debian's `dataset-fashion-mnist` package: the original gzip idx files (`dpkg -L` lists them).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = tuple(
    (f"{part}-images-idx3-ubyte.gz", f"{part}-labels-idx1-ubyte.gz") for part in ("train", "t10k")
)
# Local files `datasets` reads, by suffix.
FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
SUBSAMPLE_SEED = 0  # `subsample` keeps the same samples whatever the split seed


@dataclass(frozen=True)
class Pool:
    """All samples of a data set: inputs `x` (float32 features or normalised images, or int64
    token ids) and integer labels `y`."""

    x: np.ndarray
    y: np.ndarray
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


class DataNotFoundError(FileNotFoundError):
    """A configured data set is not on disk; the message says where it looked and how to get it."""


def load_pool(spec: dict[str, Any]) -> Pool:
    """Load the data set described by a `data.<name>` config entry (optionally subsampled)."""
    source = spec["source"]
    if source == "sklearn":
        pool = _sklearn_pool(spec["name"])
    elif source == "torchvision":
        pool = _image_pool(
            spec["name"], Path(spec.get("root", "data")), spec.get("download", False)
        )
    elif source == "huggingface":
        pool = _text_pool(spec)
    else:
        raise ValueError(f"data source {source!r} is not supported; use one of: {SOURCES}")
    return subsample(pool, spec["subsample"]) if "subsample" in spec else pool


def subsample(pool: Pool, n: int) -> Pool:
    """A fixed random `n` samples of the pool, in pool order, for quick runs on large data."""
    if n >= len(pool.y):
        return pool
    keep = np.sort(np.random.default_rng(SUBSAMPLE_SEED).permutation(len(pool.y))[:n])
    return Pool(pool.x[keep], pool.y[keep], pool.n_classes)


def _sklearn_pool(name: str) -> Pool:
    """scikit-learn's bundled data sets: real data that ships with the package."""
    if name not in SKLEARN_DATASETS:
        raise ValueError(f"unknown sklearn data set {name!r}; use one of {SKLEARN_DATASETS}")
    if name == "digits":
        images, y = _digits()
        # 8x8 grey images with values 0..16; keep the image shape for convolutional models.
        x = (images / 16.0).astype(np.float32)[:, None, :, :]
    else:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{name}")()
        y = bunch.target.astype(np.int64)
        data = bunch.data.astype(np.float64)
        x = ((data - data.mean(0)) / (data.std(0) + 1e-12)).astype(np.float32)
    return Pool(x=x, y=y, n_classes=int(y.max()) + 1)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits' (n, 8, 8) float64 images and int64 labels, read from the file scikit-learn
    ships as its `load_digits` reads it, without importing scikit-learn: that import (with
    scipy) takes longer than the rest of a training job's data loading."""
    package = importlib.util.find_spec("sklearn")
    if package is None:
        raise DataNotFoundError("data set digits ships with scikit-learn; install scikit-learn")
    path = Path(package.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _image_pool(name: str, root: Path, download: bool) -> Pool:
    """An image data set's labelled parts (train and test) as one pool of normalised images.

    Fashion-MNIST is read from Debian's package when torchvision's copy is not under `root`.
    """
    if name not in IMAGE_FOLDERS:
        raise ValueError(
            f"unknown torchvision data set {name!r}; use one of {tuple(IMAGE_FOLDERS)}"
        )
    folder = root / IMAGE_FOLDERS[name]
    debian = all((DEBIAN_FASHION_MNIST / f).is_file() for pair in FASHION_MNIST_FILES for f in pair)
    if name == "fashion_mnist" and debian and not download and not folder.is_dir():
        return _normalised(*_debian_fashion_mnist())
    try:
        if name == "tinyimagenet":
            return _normalised(*_tiny_imagenet(root, download))
        return _normalised(*_torchvision_images(name, root, download))
    except (RuntimeError, OSError) as err:  # torchvision: missing or corrupted; no network
        fetch = "with `download: true` in its data entry"
        how = {
            "fashion_mnist": f"with `apt-get install dataset-fashion-mnist` or {fetch}",
            "tinyimagenet": f"{fetch} (fetches {TINY_IMAGENET_URL} once)",
        }.get(name, f"{fetch} (needs internet once)")
        looked = f"{folder} and {DEBIAN_FASHION_MNIST}" if name == "fashion_mnist" else folder
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataNotFoundError(
            f"data set {name} is not on disk: looked in {looked} ({detail}). Get it {how}, "
            f"or set `root` to the folder holding {IMAGE_FOLDERS[name]}"
        ) from err


def _torchvision_images(
    name: str, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """CIFAR-10/100 and Fashion-MNIST through torchvision's own data set classes."""
    import torchvision.datasets

    cls = {
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
    }[name]
    parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    images = np.concatenate([np.asarray(part.data) for part in parts])
    labels = np.concatenate([np.asarray(part.targets) for part in parts])
    return images, labels.astype(np.int64), len(parts[0].classes)


def _debian_fashion_mnist() -> tuple[np.ndarray, np.ndarray, int]:
    """Fashion-MNIST from Debian's gzip idx files: 60,000 train + 10,000 test images."""
    parts = [
        (_read_idx(DEBIAN_FASHION_MNIST / images), _read_idx(DEBIAN_FASHION_MNIST / labels))
        for images, labels in FASHION_MNIST_FILES
    ]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return images, labels.astype(np.int64), 10


def _read_idx(path: Path) -> np.ndarray:
    """A gzip idx file of unsigned bytes (LeCun's MNIST format): 0x0000 08 ndim, big-endian
    uint32 dimensions, then the data."""
    data = gzip.decompress(path.read_bytes())
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    shape = np.frombuffer(data, ">u4", count=ndim, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _tiny_imagenet(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Tiny-ImageNet's labelled parts: train/<wnid>/images (read by torchvision's ImageFolder)
    and val/images labelled by val/val_annotations.txt; 200 classes numbered as ImageFolder
    numbers the train folders (sorted wnids)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import default_loader
    from torchvision.datasets.utils import download_and_extract_archive

    base = root / IMAGE_FOLDERS["tinyimagenet"]
    if download and not base.is_dir():
        download_and_extract_archive(TINY_IMAGENET_URL, str(root))
    wnids = sorted((base / "wnids.txt").read_text().split())
    train = ImageFolder(str(base / "train"))
    if train.classes != wnids:
        raise ValueError(f"{base / 'train'}: class folders differ from wnids.txt; re-extract it")
    annotations = pd.read_csv(
        base / "val" / "val_annotations.txt", sep="\t", header=None, usecols=[0, 1]
    )
    val = [
        (str(base / "val" / "images" / file), train.class_to_idx[wnid])
        for file, wnid in annotations.itertuples(index=False)
    ]
    samples = train.samples + val
    images = np.stack([np.asarray(default_loader(path).convert("RGB")) for path, _ in samples])
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return images, labels, len(wnids)


def _normalised(images: np.ndarray, labels: np.ndarray, n_classes: int) -> Pool:
    """uint8 images (n, H, W[, C]) as float32 (n, C, H, W), every channel standardised to mean 0
    and sd 1 over the pool, so every model sees the same scale whatever the data set.

    A channel takes at most 256 values: its mean and sd come from their counts, and its pixels
    from a table of 256 (the same numbers as standardising every pixel, at a fraction of the
    time: every job loads the pool)."""
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    levels = np.arange(256, dtype=np.float32)
    x = np.empty((len(images), images.shape[3], *images.shape[1:3]), dtype=np.float32)
    for c in range(images.shape[3]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        centred = (levels - counts @ levels.astype(np.float64) / n).astype(np.float32)
        deviation = centred.astype(np.float64) - counts @ centred.astype(np.float64) / n
        sd = np.sqrt(counts @ deviation**2 / n)
        x[:, c] = (centred / (sd + 1e-8)).astype(np.float32)[images[..., c]]
    return Pool(x=x, y=labels, n_classes=n_classes)


def _text_pool(spec: dict[str, Any]) -> Pool:
    """A text classification set: every labelled split, tokenized into fixed-length token ids
    (padded or truncated to `max_length`; the model masks the padding)."""
    from transformers import AutoTokenizer

    text_column, label_column = spec.get("text_column", "text"), spec.get("label_column", "label")
    parts = _text_dataset(spec)
    for part in parts:
        missing = {text_column, label_column} - set(part.column_names)
        if missing:
            raise ValueError(
                f"data set {spec['name']!r} has no column(s) {sorted(missing)}; its columns are "
                f"{part.column_names}: set text_column / label_column"
            )
    feature = parts[0].features[label_column]
    table = pd.concat(
        [part.select_columns([text_column, label_column]).to_pandas() for part in parts],
        ignore_index=True,
    )
    if hasattr(feature, "num_classes"):  # a ClassLabel; -1 marks unlabelled rows (IMDB)
        table = table[table[label_column] >= 0]
        labels, n_classes = table[label_column].to_numpy(np.int64), feature.num_classes
    else:  # plain integers or strings: classes numbered in sorted order
        classes, labels = np.unique(table[label_column].to_numpy(), return_inverse=True)
        n_classes = len(classes)
    tokenizer = pretrained.load(AutoTokenizer.from_pretrained, spec["tokenizer"], "tokenizer")
    ids = tokenizer(
        table[text_column].tolist(),
        padding="max_length",
        truncation=True,
        max_length=spec.get("max_length", 128),
        return_tensors="np",
    )["input_ids"]
    return Pool(x=ids.astype(np.int64), y=labels.astype(np.int64), n_classes=int(n_classes))


def _text_dataset(spec: dict[str, Any]) -> list[Any]:
    """The splits of a Hugging Face data set: from local files (`data_files`), a `save_to_disk`
    folder (`root`), or a hub name through the Hugging Face cache."""
    import datasets

    name = spec["name"]
    if "data_files" in spec:
        files = spec["data_files"]
        first = _first_file(files)
        builder = FILE_FORMATS.get(Path(first).suffix)
        if builder is None:
            raise ValueError(f"data_files: cannot read {first}; use {sorted(FILE_FORMATS)} files")
        try:
            loaded = datasets.load_dataset(builder, data_files=files)
        except FileNotFoundError as err:
            raise DataNotFoundError(
                f"data set {name!r} is not on disk: looked for data_files {files} (relative to "
                f"{Path.cwd()}): {err}. Write the files there or fix data_files"
            ) from err
    elif "root" in spec:
        root = Path(spec["root"])
        if not root.exists() and spec.get("download", False):
            _hub_dataset(name).save_to_disk(str(root))
        if not root.exists():
            raise DataNotFoundError(
                f"data set {name!r} is not on disk: looked in {root}. Get it with "
                f"`download: true` in its data entry (saves the hub copy there once), or on a "
                f'machine with internet: python -c "import datasets; '
                f"datasets.load_dataset('{name}').save_to_disk('{root}')\""
            )
        loaded = datasets.load_from_disk(str(root))
    else:
        loaded = _hub_dataset(name)
    return list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]


def _hub_dataset(name: str) -> Any:
    """A hub data set from the Hugging Face cache (or the hub, unless HF_HUB_OFFLINE=1)."""
    import datasets

    try:
        return datasets.load_dataset(name)
    except OSError as err:  # ConnectionError offline, FileNotFoundError for unknown names
        hub = "off (HF_HUB_OFFLINE=1)" if datasets.config.HF_HUB_OFFLINE else "unreachable"
        raise DataNotFoundError(
            f"data set {name!r} is not on disk: looked in the Hugging Face cache "
            f"{datasets.config.HF_DATASETS_CACHE}, and the hub is {hub}. Get it on a machine "
            f"with internet: python -c \"import datasets; datasets.load_dataset('{name}')"
            f".save_to_disk('data/{name}')\", then set `root: data/{name}` in its data entry"
        ) from err


def _first_file(files: str | list[str] | dict[str, str | list[str]]) -> str:
    """The first path named by a `data_files` value (a path, a list, or a split -> path(s) map)."""
    if isinstance(files, dict):
        files = next(iter(files.values()))
    return files if isinstance(files, str) else files[0]
