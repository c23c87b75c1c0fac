"""The committed CIFAR-10 test subset of the HIL accuracy checks, and the image sets the checks run on.

`fixtures/cifar10/test-subset-500.npz` holds 50 test images per class, taken from the byte-exact images of the
project's CIFAR-10 copy (`exact_test == 1`, test indices 0..1016; the other test images were decoded from a JPEG
re-encoding), lowest test indices first within each class. So CI runs on real CIFAR-10 bytes without the
170 MB data set. Keys: `x` (N, 32, 32, 3) uint8 RGB, `y` (N,) uint8 labels, `index` (N,) the test-set indices.

The images are stored in round-robin class order (class 0's first image, class 1's first, ..., class 9's first,
class 0's second, ...), not by test index: every prefix of 10 m images is then balanced too, so
`hil accuracy --images 100` still has 10 images per class.

Regenerate (bit-identical arrays; the README's sha256s are of the arrays, not of the zip):

    python -m hil.accuracy.subset [--source ../shared/datasets/cifar10/cifar10.npz] [--out fixtures/cifar10/...]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil import paths
from hil.datasets import DatasetError, load_dataset
from hil.errors import UsageError

SUBSET_PATH = paths.FIXTURES / "cifar10" / "test-subset-500.npz"
# The project's CIFAR-10 copy (../shared/datasets/cifar10/README.md), outside the repository.
DEFAULT_DATA = paths.PROJECT_ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10.npz"
PER_CLASS = 50
NUM_CLASSES = 10
SUBSET_KEYS = ("x", "y", "index")


class SubsetError(UsageError):
    """The subset cannot be built or loaded (missing keys, too few exact images of a class, wrong dtypes)."""


@dataclass(frozen=True)
class ImageSet:
    """Images to run (uint8 RGB, NHWC), their labels, their indices in the source test set, and where they
    come from (a provenance string for every report)."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or self.x.shape[-1] != 3:
            raise SubsetError(f"images must be uint8 (N, H, W, 3), got {self.x.dtype} {self.x.shape}")
        if not len(self.x) == len(self.y) == len(self.index):
            raise SubsetError(f"{len(self.x)} images, {len(self.y)} labels, {len(self.index)} indices")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    def head(self, n: int) -> ImageSet:
        """The first n images (for the committed subset: still class-balanced when n is a multiple of 10)."""
        if not 0 < n <= len(self):
            raise SubsetError(f"asked for {n} images, the set has {len(self)} ({self.source})")
        if n == len(self):
            return self
        return ImageSet(self.x[:n], self.y[:n], self.index[:n], f"{self.source}, first {n}")

    def class_counts(self, num_classes: int = NUM_CLASSES) -> list[int]:
        return np.bincount(self.y.astype(np.int64), minlength=num_classes).tolist()


def array_sha256(a: np.ndarray) -> str:
    """sha256 of the raw C-order bytes (as the data set README gives them; independent of the zip container)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def select_indices(y_test: np.ndarray, exact_test: np.ndarray, per_class: int = PER_CLASS) -> np.ndarray:
    """Test indices: per class the `per_class` lowest indices among the byte-exact images, interleaved
    round-robin over the classes (see the module docstring)."""
    y = np.asarray(y_test).reshape(-1)
    exact = np.asarray(exact_test).reshape(-1).astype(bool)
    if len(y) != len(exact):
        raise SubsetError(f"{len(y)} labels but {len(exact)} exact_test flags")
    classes = int(y.max()) + 1 if len(y) else 0
    picks = []
    for c in range(classes):
        candidates = np.flatnonzero(exact & (y == c))
        if len(candidates) < per_class:
            raise SubsetError(f"class {c} has {len(candidates)} byte-exact test images, {per_class} needed")
        picks.append(candidates[:per_class])
    # column-major flatten of (classes, per_class): c0[0], c1[0], ..., c9[0], c0[1], ...
    return np.stack(picks).T.reshape(-1).astype(np.int64)


def build_subset(source: Path = DEFAULT_DATA, per_class: int = PER_CLASS) -> ImageSet:
    """The subset from the project's CIFAR-10 copy (needs its `exact_test` key)."""
    source = Path(source)
    if not source.is_file():
        raise SubsetError(f"{source} does not exist (the project's CIFAR-10 copy, ../shared/datasets/cifar10/)")
    with np.load(source) as npz:
        missing = [k for k in ("x_test", "y_test", "exact_test") if k not in npz.files]
        if missing:
            raise SubsetError(f"{source} lacks {', '.join(missing)}")
        x_test, y_test, exact = npz["x_test"], npz["y_test"], npz["exact_test"]
    index = select_indices(y_test, exact, per_class)
    return ImageSet(
        x=np.ascontiguousarray(x_test[index]).astype(np.uint8),
        y=np.asarray(y_test)[index].astype(np.uint8),
        index=index,
        source=f"{source.name}: {per_class} byte-exact test images per class",
    )


def write_subset(subset: ImageSet, out: Path = SUBSET_PATH) -> dict[str, str]:
    """Writes the .npz (x uint8, y uint8, index int64); returns the sha256 of each array."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": subset.x, "y": subset.y.astype(np.uint8), "index": subset.index.astype(np.int64)}
    np.savez_compressed(out, **arrays)
    return {k: array_sha256(v) for k, v in arrays.items()}


def load_subset(path: Path = SUBSET_PATH) -> ImageSet:
    """The committed subset (or another file with the same keys)."""
    path = Path(path)
    if not path.is_file():
        raise SubsetError(f"{path} does not exist; regenerate it with: python -m hil.accuracy.subset")
    with np.load(path) as npz:
        missing = [k for k in SUBSET_KEYS if k not in npz.files]
        if missing:
            raise SubsetError(f"{path} lacks {', '.join(missing)} (needs {', '.join(SUBSET_KEYS)})")
        x, y, index = npz["x"], npz["y"], npz["index"]
    return ImageSet(x, y.astype(np.int64), index.astype(np.int64), f"{paths.display(path)} ({len(x)} images)")


def load_test_set(data: Path | str = DEFAULT_DATA) -> ImageSet:
    """The whole test set of a data set (a .npz with x_test/y_test, an image folder, or 'cifar10' when cached),
    with the loader's provenance. Never downloads."""
    try:
        dataset = load_dataset(data, allow_download=False)
    except DatasetError as exc:
        raise SubsetError(str(exc)) from None
    n = len(dataset.x_test)
    return ImageSet(dataset.x_test, dataset.y_test.astype(np.int64), np.arange(n, dtype=np.int64),
                    f"full test set ({n} images) of {dataset.provenance}")


def select_images(images: int | str | None = None, data: Path | str | None = None) -> ImageSet:
    """What `hil accuracy --images` and the `hil_dataset` fixture run on:

    - None: the whole committed subset (500 images);
    - "all": the whole test set of `data` (default: the project's CIFAR-10 copy);
    - N without `data`: the first N images of the committed subset (balanced when N is a multiple of 10); more
      than the subset holds: the first N test images of the project's CIFAR-10 copy;
    - N with `data`: the first N test images of that data set.
    """
    if images == "all":
        return load_test_set(data if data is not None else DEFAULT_DATA)
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise SubsetError(f"images must be a positive whole number or 'all', not {images!r}")
    if data is not None:
        full = load_test_set(data)
        return full if images is None else full.head(images)
    subset = load_subset()
    if images is None:
        return subset
    if images > len(subset):
        return load_test_set(DEFAULT_DATA).head(images)
    return subset.head(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.accuracy.subset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_DATA, help="the project's CIFAR-10 .npz")
    parser.add_argument("--out", type=Path, default=SUBSET_PATH)
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    args = parser.parse_args(argv)
    try:
        subset = build_subset(args.source, args.per_class)
    except SubsetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hashes = write_subset(subset, args.out)
    print(f"{args.out}: {len(subset)} images, classes {subset.class_counts()}, test indices "
          f"{int(subset.index.min())}..{int(subset.index.max())}")
    for key, digest in hashes.items():
        print(f"  {key} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
