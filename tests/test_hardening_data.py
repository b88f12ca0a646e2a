"""netsize.data on hostile or tiny inputs: every mistake is a one-sentence UserError that names
the file, line, column number or recipe key, and never echoes what the file holds."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from netsize.data import _split_and_build, load_data
from netsize.errors import UserError
from netsize.recipe import AugmentConfig, CsvData, SyntheticData, TorchvisionData

SECRET = "s3cr3t-token"  # planted in files: no message may show it


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table(path: Path, n_rows: int, header: str = "a,b,y", classes: int = 2) -> Path:
    body = "".join(f"{i},{i * 0.5},{i % classes}\n" for i in range(n_rows))
    return write(path, header + "\n" + body)


def cfg(path: Path, target: str = "y", **kwargs: object) -> CsvData:
    return CsvData(source="csv", path=str(path), target=target, **kwargs)  # type: ignore[arg-type]


def refused(config: object, *must: str) -> str:
    with pytest.raises(UserError) as info:
        load_data(config, seed=0)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and SECRET not in message, message
    for part in must:
        assert part in message, (part, message)
    return message


# ---------------------------------------------------------------------------------- split sizes
def test_fractions_that_leave_too_little_training_data() -> None:
    config = SyntheticData(source="synthetic", n_samples=10, val_fraction=0.49,
                           test_fraction=0.49)
    message = refused(config, "data.val_fraction", "data.test_fraction", "1 training",
                      "out of 10")
    assert "validation" in message and "test" in message


def test_split_with_fewer_than_two_training_examples() -> None:
    x, y = torch.randn(3, 2), torch.randn(3, 1)
    with pytest.raises(UserError, match=r"1 training and 1 validation and 1 test"):
        _split_and_build(x, y, "regression", 0.15, 0.15, seed=0)


def test_stratified_split_of_a_tiny_data_set(tmp_path: Path) -> None:
    # Ten rows, five classes of two: no class can give a validation or a test example.
    path = table(tmp_path / "tiny.csv", 10, classes=5)
    refused(cfg(path), "data.val_fraction", "data.test_fraction", "0 validation",
            "smallest of 5 classes has 2 examples")


def test_every_class_keeps_a_training_example(tmp_path: Path) -> None:
    path = table(tmp_path / "d.csv", 40, classes=10)  # four examples per class
    s = load_data(cfg(path, val_fraction=0.45, test_fraction=0.45), seed=0)
    assert set(s.y_train.tolist()) == set(range(10))
    assert len(s.y_val) and len(s.y_test)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 40


def test_small_but_sufficient_csv_loads(tmp_path: Path) -> None:
    s = load_data(cfg(table(tmp_path / "d.csv", 10), task="regression"), seed=0)
    assert len(s.x_train) >= 2 and len(s.x_val) >= 1 and len(s.x_test) >= 1
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 10


def write_cifar10(root: Path, per_batch: int) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [i % 10 for i in range(per_batch)]}, f)


def test_torchvision_limit_too_small_for_a_validation_split(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=2)
    config = TorchvisionData(source="torchvision", name="CIFAR10", root=str(tmp_path), limit=2)
    message = refused(config, "data.val_fraction", "0 validation")
    assert "data.test_fraction" not in message  # the official test set is not split off


# ------------------------------------------------------------------------------------- CSV rows
@pytest.mark.parametrize("n_rows", [0, 1, 2, 3, 9])
def test_csv_with_too_few_rows(tmp_path: Path, n_rows: int) -> None:
    path = table(tmp_path / "few.csv", n_rows)
    refused(cfg(path), str(path), f"{n_rows} data rows", "at least 10")


def test_empty_csv_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    refused(cfg(path), str(path), "empty CSV file")


def test_folder_as_csv(tmp_path: Path) -> None:
    refused(cfg(tmp_path), str(tmp_path), "folder", "data.path")


def test_csv_field_over_the_csv_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    lines = ["a,b,y"] + [f"{i},{i},{i % 2}" for i in range(12)]
    lines[5] = '"' + SECRET * (140_000 // len(SECRET)) + '",1,0'  # line 6
    write(path, "\n".join(lines) + "\n")
    assert csv.field_size_limit() == 131_072
    refused(cfg(path), str(path), "line 6", "131,072 characters")


@pytest.mark.parametrize("payload", [b"a,b,y\n1,2,\xff\xfe\n" + b"1,2,0\n" * 12,
                                     b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))])
def test_csv_not_utf8(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(payload)
    refused(cfg(path), str(path), "UTF-8")


def test_csv_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + table(tmp_path / "plain.csv", 20).read_bytes())
    assert load_data(cfg(path), seed=0).input_shape == (2,)


def test_ragged_row(tmp_path: Path) -> None:
    rows = ["a,b,y"] + [f"{i},{i},{i % 2}" for i in range(12)]
    rows[4] = f"4,{SECRET}"  # line 5: two fields
    path = write(tmp_path / "ragged.csv", "\n".join(rows) + "\n")
    refused(cfg(path), str(path), "line 5 has 2 fields", "header has 3")


def test_line_numbers_count_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    rows = ["a,b,y", '"1\n",2,0', "", "3,oops,1"] + [f"{i},{i},{i % 2}" for i in range(12)]
    path = write(tmp_path / "lines.csv", "\n".join(rows) + "\n")
    # '"1\n"' (a number: float() drops the newline) spans lines 2-3, line 4 is blank, the bad
    # cell is on line 5.
    refused(cfg(path), "line 5, column 2")
    rows[1] = "1,2,0"
    path = write(tmp_path / "lines.csv", "\n".join(rows) + "\n")
    refused(cfg(path), "line 4, column 2")


@pytest.mark.parametrize("header,what", [("", "header (line 1) is empty"),
                                         (",,", "header (line 1) is empty"),
                                         ("a,,y", "column 2 of the header (line 1) has no name"),
                                         ("a, a ,y", "column 2 of the header (line 1) repeats"),
                                         ("y", "names 1 column")])
def test_bad_header(tmp_path: Path, header: str, what: str) -> None:
    body = "".join(f"{i},{i},{i % 2}\n" for i in range(12))
    path = write(tmp_path / "h.csv", header + "\n" + body)
    refused(cfg(path), str(path), what)


def test_missing_target_names_the_key_not_the_header(tmp_path: Path) -> None:
    path = table(tmp_path / "t.csv", 12, header=f"{SECRET},password,y")
    message = refused(cfg(path, target="label"), str(path), "'label'", "data.target")
    assert "password" not in message


@pytest.mark.parametrize("cell", [SECRET, "", "nan", "inf", "-Infinity"])
def test_non_numeric_feature_names_line_and_column_number(tmp_path: Path, cell: str) -> None:
    rows = ["a,b,y"] + [f"{i},{i},{i % 2}" for i in range(12)]
    rows[7] = f"7,{cell},1"  # line 8, column 2
    path = write(tmp_path / "n.csv", "\n".join(rows) + "\n")
    message = refused(cfg(path), str(path), "line 8, column 2", "not a finite number")
    assert "'b'" not in message  # the column's name is the file's, not shown


def test_non_numeric_regression_target(tmp_path: Path) -> None:
    rows = ["a,y"] + [f"{i},{i * 0.25}" for i in range(12)]
    rows[3] = f"3,{SECRET}"
    path = write(tmp_path / "r.csv", "\n".join(rows) + "\n")
    refused(cfg(path, task="regression"), str(path), "line 4, column 2 (data.target)")


def test_single_class_target(tmp_path: Path) -> None:
    path = table(tmp_path / "one.csv", 12, classes=1)
    refused(cfg(path), str(path), "column 3 (data.target) has a single class")


def test_augment_on_csv_features_is_refused(tmp_path: Path) -> None:
    path = table(tmp_path / "d.csv", 20)
    refused(cfg(path, augment=AugmentConfig(crop_padding=2)), "data.augment", "image")
