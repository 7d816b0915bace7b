"""Built-in data-source schemes: `tfds:NAME[/CONFIG][@SPLIT]` and `keras:NAME[@SPLIT]`.

Both keep their libraries' real loading path but never wait on the network:
when the data is not on disk they say so at once, with what to do.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any, Iterator

import kit
from kit.data import Row, Source

KERAS_DATASETS: dict[str, dict[str, Any]] = {
    "fashion_mnist": {
        "subdir": "fashion-mnist",
        "files": {
            "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
            "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        },
        "labels": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "debian": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
    },
    "mnist": {"archive": "mnist.npz", "labels": [str(i) for i in range(10)]},
}


def _split_of(rest: str, role: str) -> tuple[str, str]:
    name, _, split = rest.partition("@")
    return name, split or role


# TFDS's own syntax: NAME[/CONFIG][:VERSION]; refused here with an example rather than deep inside tfds.builder.
TFDS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?")


def _checked_tfds_name(name: str, spec: str) -> str:
    if TFDS_NAME.fullmatch(name):
        return name
    raise kit.DataError(
        f"'{spec}' does not name a TFDS data set: write tfds:NAME[/CONFIG][:VERSION][@SPLIT], "
        f"e.g. tfds:mnist, tfds:imdb_reviews/plain_text@test or tfds:mnist@train[:10%]."
    )


class TfdsSource(Source):
    """A TensorFlow Datasets split, read from a prepared `data_dir`."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        self.dataset = name
        self.split = split
        self.data_dir = data_dir
        self.name = f"tfds:{name}@{split}"
        self._builder = None

    def builder(self) -> Any:
        if self._builder is None:
            builder = self._make_builder()
            if not builder.is_prepared():
                where = self.data_dir or "the default data_dir (~/tensorflow_datasets)"
                raise kit.DataError(
                    f"TFDS data set '{self.dataset}' is not prepared in {where}. Prepare it on a machine with network "
                    f"access (`tfds build {self.dataset} --data_dir DIR`) and set data.tfds_data_dir to DIR."
                )
            self._check_split(builder)
            self._builder = builder
        return self._builder

    def _make_builder(self) -> Any:
        import tensorflow_datasets as tfds

        try:
            return tfds.builder(self.dataset, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise kit.DataError(
                f"TFDS has no data set named '{self.dataset}' ({self.name}). See `tfds.list_builders()`."
            ) from None
        except (ValueError, AssertionError) as exc:  # an unknown config or version
            reason = str(exc).split(": ", 1)[-1].split("\n")[0]
            raise kit.DataError(f"{self.name}: TFDS cannot open '{self.dataset}': {reason}") from None

    def _check_split(self, builder: Any) -> None:
        known = ", ".join(builder.info.splits)
        if self.split.split("[")[0] not in builder.info.splits:
            raise kit.DataError(f"TFDS data set '{self.dataset}' has no split '{self.split}'. Splits: {known}.")
        try:
            builder.info.splits[self.split]  # parses a slice such as train[:10%]
        except (ValueError, KeyError, AssertionError, TypeError) as exc:
            raise kit.DataError(
                f"{self.name}: '{self.split}' is not a split TFDS understands ({str(exc).splitlines()[0]}). "
                f"Write a split name ({known}) or a slice such as train[:10%] or train[100:200]."
            ) from None

    def columns(self) -> list[str]:
        return list(self.builder().info.features.keys())

    def rows(self) -> Iterator[Row]:
        import tensorflow_datasets as tfds

        builder = self.builder()
        names = _class_names(builder.info.features)
        dataset = builder.as_dataset(split=self.split, shuffle_files=False)
        for number, example in enumerate(tfds.as_numpy(dataset), start=1):
            values = {key: _plain(key, value, names) for key, value in example.items()}
            yield Row(number, values, origin=f"{self.name} example {number}")

    def fingerprint(self) -> str:
        info = self.builder().info
        return f"{info.name}-{info.version}-{info.splits[self.split.split('[')[0]].num_examples}"


def _class_names(features: Any) -> dict[str, list[str]]:
    import tensorflow_datasets as tfds

    return {key: f.names for key, f in features.items() if isinstance(f, tfds.features.ClassLabel)}


def _plain(key: str, value: Any, names: dict[str, list[str]]) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if key in names and getattr(value, "ndim", 1) == 0:
        return names[key][int(value)]
    if getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def open_tfds(rest: str, data_config: Any, project_dir: Path, role: str) -> Source:
    name, split = _split_of(rest, role)
    name = _checked_tfds_name(name, f"tfds:{rest}")
    data_dir = data_config.tfds_data_dir
    if data_dir and not os.path.isabs(data_dir):
        data_dir = str(project_dir / data_dir)
    return TfdsSource(name, split, data_dir)


class KerasDatasetSource(Source):
    """A `keras.datasets` data set, read from Keras's cache (or the Debian package's files)."""

    kind_hint = "image"

    def __init__(self, dataset: str, split: str):
        if dataset not in KERAS_DATASETS:
            known = ", ".join(f"keras:{name}" for name in KERAS_DATASETS)
            raise kit.DataError(
                f"keras:{dataset} is not a data set kit reads from Keras's cache: use one of {known} "
                f"(with @test for the test split), or tfds:NAME for others."
            )
        if split not in ("train", "test"):
            raise kit.DataError(f"keras:{dataset} has splits train and test, not '{split}'.")
        self.dataset = dataset
        self.split = split
        self.name = f"keras:{dataset}@{split}"
        self.spec = KERAS_DATASETS[dataset]

    def columns(self) -> list[str]:
        return ["image", "label"]

    def arrays(self) -> tuple[Any, Any]:
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
        if "archive" in self.spec:
            return self._from_archive(home / self.spec["archive"])
        images, labels = self.spec["files"][self.split]
        for folder in (home / self.spec["subdir"], Path(self.spec["debian"][1])):
            if (folder / images).is_file() and (folder / labels).is_file():
                return _read_idx(folder / images), _read_idx(folder / labels)
        raise kit.DataError(
            f"{self.name}: the files are not on this machine. Install the Debian package "
            f"`{self.spec['debian'][0]}` (apt-get install {self.spec['debian'][0]}), or copy {images} and {labels} "
            f"into {home / self.spec['subdir']}."
        )

    def _from_archive(self, archive: Path) -> tuple[Any, Any]:
        if not archive.is_file():
            raise kit.DataError(f"{self.name}: {archive} is missing and cannot be downloaded here.")
        import keras

        try:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, self.dataset).load_data()
        except Exception as exc:  # noqa: BLE001  numpy's zip reader raises many kinds on a damaged file
            raise kit.DataError(
                f"{self.name}: {archive} is damaged ({type(exc).__name__}: {exc}). Delete it and copy an intact one."
            ) from None
        return (x_train, y_train) if self.split == "train" else (x_test, y_test)

    def rows(self) -> Iterator[Row]:
        images, labels = self.arrays()
        names = self.spec["labels"]
        for number, (image, label) in enumerate(zip(images, labels), start=1):
            yield Row(number, {"image": image, "label": names[int(label)]}, origin=f"{self.name} example {number}")

    def fingerprint(self) -> str:
        return f"{self.name}"


def _read_idx(path: Path) -> Any:
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        dims = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    except (OSError, EOFError, IndexError, ValueError) as exc:
        raise kit.DataError(
            f"{path} is damaged or not an IDX file ({type(exc).__name__}: {exc}). Delete it and copy an intact one."
        ) from None


def open_keras(rest: str, data_config: Any, project_dir: Path, role: str) -> Source:
    name, split = _split_of(rest, "test" if role != "train" else "train")
    return KerasDatasetSource(name, split)


@kit.hookimpl
def register_data_sources(register: Any) -> None:
    register("tfds", open_tfds)
    register("keras", open_keras)
