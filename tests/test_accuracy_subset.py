"""The committed CIFAR-10 test subset (fixtures/cifar10/) and how `hil accuracy` / `hil_dataset` pick images."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hil import paths
from hil.accuracy.subset import (
    DEFAULT_DATA,
    PER_CLASS,
    SUBSET_PATH,
    ImageSet,
    SubsetError,
    array_sha256,
    build_subset,
    load_subset,
    select_images,
    select_indices,
)

EXACT_TEST_IMAGES = 1017  # ../shared/datasets/cifar10/README.md: test indices 0..1016 are byte-exact


def _readme_hashes() -> dict[str, str]:
    text = (SUBSET_PATH.parent / "README.md").read_text()
    return dict(re.findall(r"^- (x|y|index) ([0-9a-f]{64})$", text, flags=re.M))


def test_committed_subset_has_the_documented_arrays_and_hashes():
    with np.load(SUBSET_PATH) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert sorted(arrays) == ["index", "x", "y"]
    assert arrays["x"].dtype == np.uint8 and arrays["x"].shape == (500, 32, 32, 3)
    assert arrays["y"].dtype == np.uint8 and arrays["y"].shape == (500,)
    assert {k: array_sha256(v) for k, v in arrays.items()} == _readme_hashes()


def test_committed_subset_is_balanced_byte_exact_and_every_prefix_of_ten_is_balanced():
    subset = load_subset()
    assert subset.class_counts() == [PER_CLASS] * 10
    assert len(set(subset.index.tolist())) == 500 and subset.index.max() < EXACT_TEST_IMAGES
    for m in (1, 5, 10, 50):
        assert subset.head(10 * m).class_counts() == [m] * 10
    # lowest indices first within each class: per class the indices rise
    for c in range(10):
        idx = subset.index[subset.y == c]
        assert np.all(np.diff(idx) > 0)


@pytest.mark.skipif(not DEFAULT_DATA.is_file(), reason=f"the project's CIFAR-10 copy is not at {DEFAULT_DATA}")
def test_subset_regenerates_identically_from_the_data_set_and_is_its_exact_bytes():
    rebuilt = build_subset(DEFAULT_DATA)
    committed = load_subset()
    assert np.array_equal(rebuilt.x, committed.x) and np.array_equal(rebuilt.index, committed.index)
    assert np.array_equal(rebuilt.y, committed.y)
    with np.load(DEFAULT_DATA) as npz:
        x_test, y_test, exact = npz["x_test"], npz["y_test"], npz["exact_test"]
    assert np.array_equal(x_test[committed.index], committed.x)
    assert np.array_equal(y_test[committed.index], committed.y) and exact[committed.index].all()
    # the selection is the lowest exact indices of each class: every skipped exact image is of a full class
    for c in range(10):
        exact_c = np.flatnonzero((exact == 1) & (y_test == c))
        assert np.array_equal(np.sort(committed.index[committed.y == c]), exact_c[:PER_CLASS])


def test_select_indices_rejects_a_class_without_enough_exact_images():
    y = np.repeat(np.arange(3), 4)
    exact = np.ones_like(y)
    exact[y == 2] = 0
    exact[-1] = 1
    with pytest.raises(SubsetError, match="class 2 has 1 byte-exact"):
        select_indices(y, exact, per_class=2)
    assert select_indices(y, np.ones_like(y), per_class=2).tolist() == [0, 4, 8, 1, 5, 9]


def test_select_images_default_prefix_and_errors(tmp_path):
    assert len(select_images()) == 500
    head = select_images(30)
    assert len(head) == 30 and head.class_counts() == [3] * 10 and "first 30" in head.source
    for bad in (0, -1, "many", 2.5, True):
        with pytest.raises(SubsetError):
            select_images(bad)
    with pytest.raises(SubsetError, match="is not 'cifar10'"):
        select_images("all", tmp_path / "missing.npz")


def test_select_images_from_a_data_set_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    y = np.arange(12) % 4
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    full = select_images("all", path)
    assert len(full) == 12 and full.source.startswith("full test set (12 images) of d.npz")
    assert np.array_equal(full.index, np.arange(12)) and np.array_equal(full.x, x)
    five = select_images(5, path)
    assert len(five) == 5 and np.array_equal(five.y, y[:5])
    with pytest.raises(SubsetError, match="asked for 13"):
        select_images(13, path)


def test_image_set_checks_its_arrays():
    with pytest.raises(SubsetError, match="uint8"):
        ImageSet(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2), np.zeros(2), "x")
    with pytest.raises(SubsetError, match="2 images, 3 labels"):
        ImageSet(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3), np.zeros(2), "x")
    assert SUBSET_PATH.is_relative_to(paths.FIXTURES)
