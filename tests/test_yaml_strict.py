"""Strict YAML loading: the values of yaml.safe_load, one-sentence UserErrors for the rest."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
import yaml

from netsize import yaml_strict
from netsize.errors import UserError
from netsize.yaml_strict import MAX_DEPTH, MAX_NODES, load_yaml_file, load_yaml_text

RECIPE = """\
data: {name: digits, batch_size: 64, augment: [flip, crop]}
model:
  kind: mlp
  widths: [32, 16]
  dropout: 0.1
train:
  epochs: 3
  lr: 1.0e-3
  nesterov: yes
  decay: ~
  schedule:
    - {at: 1, lr: 0.01}
    - {at: 2, lr: 0.001}
defaults: &base {seed: 0, device: cpu}
override: {<<: *base, seed: 1}
"""


def refusal(text: str, origin: str = "recipe.yaml") -> str:
    with pytest.raises(UserError) as caught:
        load_yaml_text(text, origin)
    message = str(caught.value)
    assert origin in message
    return message


def test_valid_recipe_loads_like_safe_load(tmp_path: Path) -> None:
    assert load_yaml_text(RECIPE, "recipe.yaml") == yaml.safe_load(RECIPE)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    assert load_yaml_file(path) == yaml.safe_load(RECIPE)
    assert load_yaml_text("", "empty.yaml") is None


def test_yaml_11_scalars_kept() -> None:
    text = "a: yes\nb: off\nc: 1e3\nd: 1.0e3\ne: 0x10\nf: 2024-01-02\ng: .inf\n"
    assert load_yaml_text(text, "x.yaml") == yaml.safe_load(text)


def test_merge_key_may_override_without_counting_as_duplicate() -> None:
    text = "b: &b {x: 1}\nn: {m: &m {<<: *b, x: 5}}\ntop: {<<: *m, z: 3}\n"
    assert load_yaml_text(text, "x.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize(("text", "line", "key"), [
    ("epochs: 1\nlr: 0.1\nepochs: 2\n", 3, "'epochs'"),
    ("train:\n  epochs: 1\n  epochs: 2\n", 3, "'train.epochs'"),
    ("model:\n  layers:\n    - {width: 1, width: 2}\n", 3, "'model.layers[0].width'"),
    ("1: a\n0x1: b\n", 2, "'1'"),
])
def test_duplicate_keys_refused(text: str, line: int, key: str) -> None:
    message = refusal(text)
    assert f"line {line}" in message and key in message and "duplicate key" in message


@pytest.mark.parametrize("text", [
    "[" * 10_000 + "]" * 10_000,
    "{a: " * 10_000 + "1" + "}" * 10_000,
    "- " * 10_000 + "1\n",
    "".join(" " * i + "k:\n" for i in range(3_000)) + " " * 3_000 + "1\n",
])
def test_deep_nesting_refused_without_recursion_error(text: str) -> None:
    assert f"more than {MAX_DEPTH} levels" in refusal(text)


def test_depth_limit_is_exact() -> None:
    assert load_yaml_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x.yaml") is not None
    refusal("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_deep_nesting_through_aliases_refused() -> None:
    text = "a: &a " + "[" * 20 + "1" + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n"
    assert "aliases" in refusal(text)


def test_billion_laughs_refused_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    start = time.perf_counter()
    message = refusal("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 1.0
    assert f"more than {MAX_NODES} values (YAML aliases); remove the aliases." in message


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "a: &x {b: *x}\n", "&x [1, [2, *x]]\n"])
def test_recursive_alias_refused(text: str) -> None:
    assert "alias" in refusal(text)


@pytest.mark.parametrize("text", [
    "password: hunter2\nx: [1, 2\n",
    "password: hunter2\nkey: 'unterminated\n",
    "password: hunter2\nwhen: 2020-13-45\n",
    "password: hunter2\nctl: \x01\n",
    "password: hunter2\n---\nother: doc\n",
])
def test_messages_never_echo_contents(text: str) -> None:
    message = refusal(text)
    assert "hunter2" not in message and "password" not in message
    assert "not valid YAML at line" in message


@pytest.mark.parametrize("data", [
    pickle.dumps({"password": "hunter2"}),
    b"\xff\xfep\x00a\x00s\x00s\x00",
    "password: hunter2 caf\u00e9\n".encode("latin-1"),
    b"a: 1\n\x00\x01hunter2\n",
])
def test_non_utf8_file_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(data)
    with pytest.raises(UserError) as caught:
        load_yaml_file(path)
    message = str(caught.value)
    assert message == f"{path}: not a UTF-8 text file; save the recipe as UTF-8 YAML."


def test_directory_and_missing_file_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    with pytest.raises(UserError, match="is a directory") as caught:
        load_yaml_file(Path("recipes"))
    assert str(tmp_path / "recipes") in str(caught.value)
    with pytest.raises(UserError, match="no such file") as caught:
        load_yaml_file(Path("nope.yaml"))
    assert str(tmp_path / "nope.yaml") in str(caught.value)


def test_unreadable_file_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n")

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(UserError, match=r"cannot be read \(Permission denied\)") as caught:
        load_yaml_file(path)
    assert str(path.absolute()) in str(caught.value)


def test_large_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(UserError, match="larger than 1 MiB"):
        load_yaml_file(path)


def test_too_many_values_without_aliases_refused(monkeypatch) -> None:
    monkeypatch.setattr(yaml_strict, "MAX_NODES", 50)  # the real limit takes seconds to reach
    assert load_yaml_text("[" + "1," * 49 + "]", "x.yaml") == [1] * 49
    message = refusal("[" + "1," * 50 + "]")
    assert "more than 50 values; shrink the recipe." in message and "aliases" not in message
