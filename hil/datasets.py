"""Data sets for training, export and the accuracy job: CIFAR-10 from keras.datasets, a .npz with
x_train/y_train/x_test/y_test, or an image folder; the model input format (uint8 -> [0, 1] at the model's input
size); and the tf.data pipelines (flip + pad-4 crop augmentation for training). Below every user: it imports
only hil.paths, and TensorFlow only when called.

Loading returns uint8 arrays and a provenance string, so every reported number can say what it was measured
on (the project's CIFAR-10 copy is a hybrid, not the official bytes: see its README).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hil import paths
from hil.errors import UsageError

if TYPE_CHECKING:
    import tensorflow as tf

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
PAD = 4  # pad-4 random crop, the standard CIFAR augmentation


class DatasetError(UsageError):
    """The data set spec cannot be loaded (missing file, wrong keys, no network for keras.datasets)."""


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (N, H, W, 3) uint8 RGB
    y_train: np.ndarray  # (N,) int32
    x_test: np.ndarray
    y_test: np.ndarray
    provenance: str
    class_names: tuple[str, ...] | None = None
    # The project's hybrid CIFAR-10 copy marks the test images that are the official bytes (its npz key
    # exact_test); the committed 500-image subset is drawn from them, so its accuracy compares with theirs.
    exact_test: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    def limit(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first `train` / `test` images (smoke runs); the provenance says so."""
        if train is None and test is None:
            return self
        note = f"; first {train or len(self.x_train)} train / {test or len(self.x_test)} test images"
        return Dataset(
            self.x_train[:train],
            self.y_train[:train],
            self.x_test[:test],
            self.y_test[:test],
            self.provenance + note,
            self.class_names,
            None if self.exact_test is None else self.exact_test[:test],
        )


def _checked(x_train, y_train, x_test, y_test, provenance: str, names=None, exact_test=None) -> Dataset:  # noqa: ANN001
    arrays = {"x_train": x_train, "x_test": x_test}
    for key, x in arrays.items():
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
            raise DatasetError(f"{key} has shape {x.shape}; expected (N, S, S, 3)")
    if x_train.dtype != np.uint8 or x_test.dtype != np.uint8:
        raise DatasetError(f"images must be uint8, got {x_train.dtype} / {x_test.dtype}")
    y_train = np.asarray(y_train).reshape(-1).astype(np.int32)
    y_test = np.asarray(y_test).reshape(-1).astype(np.int32)
    if len(y_train) != len(x_train) or len(y_test) != len(x_test):
        raise DatasetError("label and image counts differ")
    if exact_test is not None:
        exact_test = np.asarray(exact_test).reshape(-1).astype(bool)
        if len(exact_test) != len(x_test):
            raise DatasetError(f"exact_test has {len(exact_test)} entries for {len(x_test)} test images")
    return Dataset(x_train, y_train, x_test, y_test, provenance, tuple(names) if names else None, exact_test)


def resolve_path(spec: str | Path) -> Path:
    """A relative path is tried against the working directory first, then against the project root."""
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return (paths.PROJECT_ROOT / path).resolve()


def load_dataset(spec: str | Path, *, allow_download: bool = True) -> Dataset:
    """`spec`: "cifar10" (official, via keras.datasets; downloads unless cached), a .npz path or a folder.

    Tests must pass a local path (or allow_download=False): nothing is ever downloaded implicitly there.
    """
    if str(spec) == "cifar10":
        return _load_keras_cifar10(allow_download)
    path = resolve_path(spec)
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if path.is_dir():
        return _load_folder(path)
    raise DatasetError(
        f"data set '{spec}' is not 'cifar10', an existing .npz file or an image folder (looked at {path})"
    )


def _load_keras_cifar10(allow_download: bool) -> Dataset:
    cached = Path.home() / ".keras" / "datasets" / "cifar-10-batches-py"
    if not allow_download and not cached.is_dir():
        raise DatasetError(f"official CIFAR-10 is not cached at {cached} and downloads are disabled")
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # network errors come as several exception types
        raise DatasetError(
            f"cannot load the official CIFAR-10 through keras.datasets ({exc}); pass the project's copy "
            "instead, e.g. ../shared/datasets/cifar10/cifar10.npz"
        ) from exc
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return _checked(x_train, y_train, x_test, y_test, "official CIFAR-10 (keras.datasets.cifar10)", names)


def _sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _readme_title(path: Path) -> str | None:
    readme = path.parent / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return None


def _load_npz(path: Path) -> Dataset:
    with np.load(path) as npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise DatasetError(f"{path} lacks keys {missing}; needs {NPZ_KEYS}")
        arrays = {k: npz[k] for k in NPZ_KEYS}
        exact = {k: npz[k] for k in ("exact_train", "exact_test") if k in npz.files}
    parts = [f"{path.name} (npz, sha256 {_sha256_prefix(path)}...)"]
    if exact:
        # The project's copy: report how much of it is the real CIFAR-10 bytes (facts from its README).
        n_train, n_test = len(arrays["x_train"]), len(arrays["x_test"])
        e_train = int(exact["exact_train"].sum()) if "exact_train" in exact else 0
        e_test = int(exact["exact_test"].sum()) if "exact_test" in exact else 0
        parts.append(
            f"hybrid CIFAR-10 copy, not byte-identical to the official archive: labels exact, "
            f"{e_train}/{n_train} train and {e_test}/{n_test} test images byte-exact, the rest decoded "
            "from a public JPEG re-encoding (about 2-3 accuracy points lower than official CIFAR-10)"
        )
    title = _readme_title(path)
    if title:
        parts.append(f"README: {title}")
    return _checked(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], "; ".join(parts),
                    exact_test=exact.get("exact_test"))


def _load_folder(root: Path) -> Dataset:
    """root/{train,test}/<class>/<image>; classes are the sorted train subfolder names. Every image is
    decoded with TensorFlow (no PIL needed) and resized to the size of the first one if it differs."""
    import tensorflow as tf

    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DatasetError(f"image folder {root} needs train/ and test/ subfolders with one folder per class")
    names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not names:
        raise DatasetError(f"{train_dir} has no class folders")
    size: list[int] = []

    def read(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, name in enumerate(names):
            class_dir = split_dir / name
            files = sorted(p for p in class_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            for file in files:
                img = tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
                if not size:
                    size.append(int(img.shape[0]))
                if img.shape[0] != size[0] or img.shape[1] != size[0]:
                    img = tf.cast(tf.round(tf.image.resize(img, (size[0], size[0]), antialias=True)), tf.uint8)
                images.append(img.numpy())
                labels.append(label)
        if not images:
            raise DatasetError(f"no images under {split_dir}")
        return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)

    x_train, y_train = read(train_dir)
    x_test, y_test = read(test_dir)
    provenance = f"image folder {root} ({len(x_train)} train / {len(x_test)} test, {len(names)} classes)"
    return _checked(x_train, y_train, x_test, y_test, provenance, names)


def synthetic_dataset(
    n_train: int = 64, n_test: int = 32, size: int = 32, num_classes: int = 10, seed: int = 0
) -> Dataset:
    """Learnable random data for smoke tests: each class has its own mean colour plus noise."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(40, 215, size=(num_classes, 1, 1, 3))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % num_classes
        x = means[y] + rng.normal(0, 30, size=(n, size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int32)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return _checked(x_train, y_train, x_test, y_test, f"synthetic ({n_train}/{n_test}, seed {seed})")


# ---------------------------------------------------------------------------------------------------------
# tf.data pipelines
# ---------------------------------------------------------------------------------------------------------


def to_model_input(images: tf.Tensor, input_size: int) -> tf.Tensor:
    """uint8 (B, S, S, 3) -> float32 in [0, 1] at the model's input size (bilinear resize if it differs)."""
    import tensorflow as tf

    x = tf.cast(images, tf.float32) / 255.0
    if images.shape[1] != input_size:
        x = tf.clip_by_value(tf.image.resize(x, (input_size, input_size)), 0.0, 1.0)
    return x


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip + zero pad 4 + random crop back to size, per image, on a uint8 batch.

    Vectorized with gathers instead of a per-image map: on a 2-core machine the input pipeline competes with
    training for the same cores. `seed` is a stateless (2,) seed, so an epoch's augmentation is reproducible
    (a resumed run sees the same data as an uninterrupted one).
    """
    import tensorflow as tf

    shape = tf.shape(images)
    batch, size = shape[0], shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    flip = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    oy = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * PAD + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([batch], seeds[2], 0, 2 * PAD + 1, dtype=tf.int32)
    rows = oy[:, None] + tf.range(size)[None, :]
    cols = ox[:, None] + tf.range(size)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


class TrainPipeline:
    """Epochs of shuffled, augmented, full batches (drop remainder: one traced shape for the train step).

    The images are put into TensorFlow once; shuffle order and augmentation depend only on (seed, epoch),
    so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        input_size: int,
        augment: bool = True,
        seed: int = 0,
        steps: int | None = None,
    ) -> None:
        import tensorflow as tf

        n_batches = len(x) // batch_size
        if n_batches == 0:
            raise DatasetError(f"{len(x)} training images are fewer than one batch of {batch_size}")
        self.steps_per_epoch = min(n_batches, steps) if steps is not None else n_batches
        self.batch_size = batch_size
        self.input_size = input_size
        self.augment = augment
        self.seed = seed
        self._n = len(x)
        self._images = tf.constant(x)
        self._labels = tf.constant(np.asarray(y, dtype=np.int32))

    def epoch(self, epoch: int) -> tf.data.Dataset:
        import tensorflow as tf

        n, b = self.steps_per_epoch, self.batch_size
        order = np.random.default_rng([self.seed, epoch]).permutation(self._n)[: n * b]
        images, labels = self._images, self._labels
        epoch_seed = tf.constant(self.seed * 100003 + epoch, tf.int64)

        def make_batch(batch_index: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            xb = tf.gather(images, idx)
            if self.augment:
                xb = augment_batch(xb, tf.stack([epoch_seed, batch_index]))
            return to_model_input(xb, self.input_size), tf.gather(labels, idx)

        index_batches = tf.data.Dataset.from_tensor_slices(order.reshape(n, b))
        return index_batches.enumerate().map(make_batch, num_parallel_calls=1).prefetch(2)


def eval_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, input_size: int) -> tf.data.Dataset:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(batch_size)
    return ds.map(lambda xb, yb: (to_model_input(xb, input_size), yb)).prefetch(2)
