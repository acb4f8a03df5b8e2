"""Pairs files: LFW pairs.txt (both headers, both line kinds, malformed lines), CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.errors import DataError
from marginface.eval.pairs import load_pairs, read_csv_pairs, read_lfw_pairs

NAMES = {"Ann_A": 3, "Bob_B": 2, "Cid_C": 2, "Dee_D": 1}


def _tree(root: Path) -> Path:
    for name, n in NAMES.items():
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def test_lfw_two_number_header_and_both_line_kinds(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "2\t1\n"
        "Ann_A\t1\t2\n"
        "Ann_A\t3\tBob_B\t1\n"
        "Bob_B 1 2\n"  # spaces work as well as tabs
        "Cid_C\t2\tDee_D\t1\n"
        "\n"
    )
    ps = read_lfw_pairs(pairs, root)
    assert ps.n_pairs == 4 and ps.format == "lfw"
    np.testing.assert_array_equal(ps.issame, [True, False, True, False])
    np.testing.assert_array_equal(ps.folds, [0, 0, 1, 1])
    keys = [Path(r.key).name for r in ps.images]
    # unique images, in first-seen order; Bob_B_0001 appears twice but is stored once
    assert keys == [
        "Ann_A_0001.jpg",
        "Ann_A_0002.jpg",
        "Ann_A_0003.jpg",
        "Bob_B_0001.jpg",
        "Bob_B_0002.jpg",
        "Cid_C_0002.jpg",
        "Dee_D_0001.jpg",
    ]
    assert ps.images[0].path == (root / "Ann_A" / "Ann_A_0001.jpg").resolve()
    np.testing.assert_array_equal(ps.left, [0, 2, 3, 5])
    np.testing.assert_array_equal(ps.right, [1, 3, 4, 6])


def test_lfw_single_number_header(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    pairs = tmp_path / "pairsDevTest.txt"
    pairs.write_text("2\nAnn_A 1 2\nBob_B 1 2\nAnn_A 1 Cid_C 1\nBob_B 2 Dee_D 1\n")
    ps = read_lfw_pairs(pairs, root)
    np.testing.assert_array_equal(ps.issame, [True, True, False, False])
    # no folds in the file: matched and mismatched pairs are spread over the folds
    assert ps.n_folds == 2
    for f in np.unique(ps.folds):
        assert set(ps.issame[ps.folds == f]) == {True, False}


@pytest.mark.parametrize(
    ("body", "lineno", "words"),
    [
        ("1\t1\nAnn_A\t1\t2\nAnn_A\t1\n", 3, "got 2 fields"),
        ("1\t1\nAnn_A\t1\t2\nAnn_A\tx\tBob_B\t1\n", 3, "not an integer"),
        ("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\t9\n", 3, "got 5 fields"),
        ("ten\t300\nAnn_A\t1\t2\n", 1, "header"),
        ("1\t1\n\nAnn_A\t1\t2\nAnn_A\t-1\tBob_B\t1\n", 4, "negative"),
    ],
)
def test_lfw_malformed_line_names_file_and_line(
    tmp_path: Path, body: str, lineno: int, words: str
) -> None:
    root = _tree(tmp_path / "imgs")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(body)
    with pytest.raises(DataError) as err:
        read_lfw_pairs(pairs, root)
    assert f"pairs.txt:{lineno}:" in str(err.value)
    assert words in str(err.value)


def test_lfw_count_mismatch_and_missing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t2\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    with pytest.raises(DataError, match="promises 4 pairs"):
        read_lfw_pairs(pairs, root)
    with pytest.raises(DataError, match="not found"):
        read_lfw_pairs(tmp_path / "nope.txt", root)
    pairs.write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    with pytest.raises(DataError, match="check --root"):
        read_lfw_pairs(pairs, tmp_path / "wrong_root")


def test_csv_pairs_with_header_and_relative_paths(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "path1,path2,same\n"
        "Ann_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1\n"
        "Ann_A/Ann_A_0001.jpg,Bob_B/Bob_B_0001.jpg,false\n"
        f"{root}/Bob_B/Bob_B_0001.jpg,Bob_B/Bob_B_0002.jpg,yes\n"
    )
    ps = load_pairs(csv_file, root)
    assert ps.format == "csv" and ps.n_pairs == 3
    np.testing.assert_array_equal(ps.issame, [True, False, True])
    assert len(ps.images) == 4  # the absolute and the relative Bob_B_0001 are one image
    assert ps.images[ps.left[2]].key == ps.images[ps.right[1]].key


def test_csv_fold_column_and_errors(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text(
        "Ann_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1,0\n"
        "Ann_A/Ann_A_0001.jpg,Bob_B/Bob_B_0001.jpg,0,1\n"
    )
    ps = read_csv_pairs(csv_file, root)
    np.testing.assert_array_equal(ps.folds, [0, 1])
    csv_file.write_text("Ann_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1\na.jpg,b.jpg,maybe\n")
    with pytest.raises(DataError, match=r"p\.csv:2: 'same'"):
        read_csv_pairs(csv_file, root)
    csv_file.write_text("Ann_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1\na.jpg,b.jpg\n")
    with pytest.raises(DataError, match=r"p\.csv:2: expected path1,path2,same"):
        read_csv_pairs(csv_file, root)


def test_celeba_dev_pairs_file(shared_data: Path) -> None:
    dev = shared_data / "celeba-dev"
    ps = load_pairs(dev / "pairs.txt", dev)
    assert ps.n_pairs == 6000 and ps.n_folds == 10
    assert int(ps.issame.sum()) == 3000
    # LFW folds are identity-disjoint: no name appears in two folds
    fold_of: dict[str, int] = {}
    for i in range(ps.n_pairs):
        for idx in (ps.left[i], ps.right[i]):
            name = Path(ps.images[idx].key).parent.name
            assert fold_of.setdefault(name, int(ps.folds[i])) == ps.folds[i]
    assert all(r.path is not None and r.path.is_file() for r in ps.images)
