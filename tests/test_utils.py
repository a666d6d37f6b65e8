"""utils: file modes and rounding of the JSON files, list parameters, the test suite's temporary folder."""
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import symlib
from symlib.utils import atomic_torch_save, atomic_write_json, atomic_write_text, json_ready, parse_list, write_results

ROOT = Path(__file__).resolve().parent.parent


def _strict_json(text: str):
    """json.loads that refuses NaN/Infinity (not JSON, though Python writes them by default)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# ---- file modes ----------------------------------------------------------------------

WRITERS = {
    "text": lambda p: atomic_write_text(p, "hello\n"),
    "json": lambda p: atomic_write_json(p, {"a": 1}),
    "torch": lambda p: atomic_torch_save({"w": torch.zeros(2)}, p),
    "results": lambda p: write_results(p, {"a": 0.5}),
}


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def test_written_files_get_the_normal_mode(tmp_path, umask, writer, mask):
    """Atomic writes give a file the mode open() would (0o666 minus the umask), not mkstemp's 0o600,
    and leave no temporary file behind."""
    umask(mask)
    path = tmp_path / "sub" / "f.out"
    WRITERS[writer](path)
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.out"]


def test_overwriting_keeps_the_normal_mode(tmp_path, umask):
    """Writing again over an existing file still gives the normal mode."""
    umask(0o022)
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and _strict_json(path.read_text()) == {"a": 2}


# ---- JSON: rounding, NaN -------------------------------------------------------------

def test_json_floats_are_rounded_to_six_significant_digits(tmp_path):
    """float32 noise is not written: 0.9649999737739563 becomes 0.965, recursively through dicts and lists."""
    x = float(torch.tensor(0.965))
    assert x == 0.9649999737739563
    path = tmp_path / "m.json"
    write_results(path, {"iia": x, "nested": {"by_count": {4: [x, 1 / 3]}}, "row": (2 / 3, np.float32(0.1)), "big": 123456789.0})
    text = path.read_text()
    assert "0.9649999" not in text and "0.3333333" not in text and "0.1000000" not in text
    assert _strict_json(text) == {"iia": 0.965, "nested": {"by_count": {"4": [0.965, 0.333333]}},
                                  "row": [0.666667, 0.1], "big": 123457000.0}


def test_json_keeps_ints_bools_none_and_writes_null_for_nan(tmp_path):
    """ints stay ints, bools bools, None null; NaN and infinities (not JSON) are written as null;
    numpy scalars, tensors and paths are converted."""
    path = tmp_path / "m.json"
    atomic_write_json(path, {"n": 3, "b": True, "f": False, "none": None, "nan": float("nan"), "inf": -math.inf,
                             "np_int": np.int64(7), "np_bool": np.bool_(True), "np_nan": np.float32("nan"),
                             "t": torch.tensor([0.5, 1 / 3]), "t0": torch.tensor(2), "p": Path("a/b"),
                             "s": "text", "empty": []})
    got = _strict_json(path.read_text())
    assert got == {"n": 3, "b": True, "f": False, "none": None, "nan": None, "inf": None, "np_int": 7, "np_bool": True,
                   "np_nan": None, "t": [0.5, 0.333333], "t0": 2, "p": "a/b", "s": "text", "empty": []}
    assert type(got["n"]) is int and type(got["np_int"]) is int and got["b"] is True


def test_json_digits_none_is_exact_and_bad_objects_raise(tmp_path):
    """digits=None writes floats exactly (used for a run's config.json); an unknown object raises TypeError."""
    assert json_ready({"x": 1 / 3}, digits=None) == {"x": 1 / 3}
    assert json_ready([float("nan")], digits=None) == [None]
    with pytest.raises(TypeError, match="object"):
        atomic_write_json(tmp_path / "x.json", {"x": object()})
    assert not (tmp_path / "x.json").exists()


def test_write_results_with_empty_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_results("", {"a": 1})
    write_results(None, {"a": 1})
    assert list(tmp_path.iterdir()) == []


# ---- list parameters -----------------------------------------------------------------

@pytest.mark.parametrize("value,want", [
    ("1,2,4", [1, 2, 4]), (" 1, 2 ", [1, 2]), ("16", [16]), (16, [16]), (16.0, [16]), (np.int64(8), [8]),
    ([1, 2], [1, 2]), ((1,), [1]), ([2.0, "4"], [2, 4]), ("[1, 2, 4]", [1, 2, 4]), ("1,2,", [1, 2]),
    ("16.0", [16]), ("", []), ("  ", []), ([], []), (None, []),
])
def test_parse_list_ints(value, want):
    """papermill passes `-p SWEEP 16` as an int and `-p SWEEP 1,2` as a string; both work."""
    got = parse_list(value, int, "SWEEP")
    assert got == want and all(type(x) is int for x in got)


@pytest.mark.parametrize("value,want", [("gru,lstm", ["gru", "lstm"]), ("gru", ["gru"]), (" gru , lstm ", ["gru", "lstm"]),
                                        (["gru", "transformer"], ["gru", "transformer"]), ("", [])])
def test_parse_list_strings(value, want):
    assert parse_list(value, str, "ARCHS") == want


def test_parse_list_floats():
    assert parse_list("0.5, 1", float) == [0.5, 1.0] and parse_list(2, float) == [2.0]


@pytest.mark.parametrize("value,kind,item", [("1,x,4", int, "'x'"), ("1,2.5", int, "2.5"), ([1, 2.5], int, "2.5"),
                                             (True, int, "True"), ([1, True], int, "True"), ("1,nan", int, "nan"),
                                             ([1, "gru"], str, "1"), ("a,b", float, "'a'"), ({"a": 1}, int, "dict")])
def test_parse_list_bad_item_names_parameter_and_item(value, kind, item):
    """A bad item raises a ValueError that names the parameter and the item."""
    with pytest.raises(ValueError) as e:
        parse_list(value, kind, name="SWEEP")
    assert "SWEEP" in str(e.value) and item in str(e.value)


# ---- the test suite's temporary folder -----------------------------------------------

def test_write_into_test_data_folder():
    """conftest points SYMLIB_DATA at a temporary folder; write into it (the test below checks
    that a test session removes that folder when it ends)."""
    data = symlib.data_dir()
    data.mkdir(parents=True, exist_ok=True)
    (data / "marker.txt").write_text("x")
    print(f"\nDATA_DIR={data}")


def test_test_session_removes_its_temporary_folder(tmp_path):
    """A pytest session (here a child one) removes the symlib-test-* folder conftest made."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYMLIB_DATA", "SYMLIB_FIGURES")}
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        "tests/test_utils.py::test_write_into_test_data_folder"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    data = Path(next(line for line in r.stdout.splitlines() if line.startswith("DATA_DIR=")).split("=", 1)[1])
    assert tmp_path in data.parents and data.parent.name.startswith("symlib-test-")  # it did use a temporary folder
    assert not data.parent.exists() and not list(tmp_path.glob("symlib-test-*"))


def test_controls_are_named_one_way():
    """choose_names (how every recipe reads ``controls``): True is all, False/None/"" none, a comma-separated
    string or a sequence picks names; an unknown name is refused with the valid ones listed."""
    import pytest
    from symlib.intervene.controls import CONTROL_NAMES
    from symlib.utils import choose_names
    assert choose_names(True, CONTROL_NAMES, "control") == CONTROL_NAMES
    assert choose_names(False, CONTROL_NAMES, "control") == choose_names(None, CONTROL_NAMES, "control") == ()
    assert choose_names("", CONTROL_NAMES, "control") == ()
    assert choose_names("no_swap, initial", CONTROL_NAMES, "control") == ("no_swap", "initial")
    assert choose_names(["wrong_labels"], CONTROL_NAMES, "control") == ("wrong_labels",)
    with pytest.raises(ValueError, match="unknown control 'wrong_lables'; valid choices: no_swap"):
        choose_names("wrong_lables", CONTROL_NAMES, "control")
