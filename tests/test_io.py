"""Atomic writes: a failed write leaves the old file, never a partial one; JSON never holds NaN."""

import json
import math
import os
import stat
import subprocess

import pytest

from onecycle import io


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_has_no_nan_and_files_honour_the_umask(tmp_path):
    target = tmp_path / "m.json"
    io.write_json(target, {"loss": math.nan, "nested": [math.inf, 1.5]})
    assert json.loads(target.read_text()) == {"loss": None, "nested": [None, 1.5]}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_git_revision_marks_code_changes_but_not_rewritten_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = io.git_revision(tmp_path / "src")
    assert clean is not None and not clean.endswith("-dirty")
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")  # the workflow rewrote a kept result
    assert io.git_revision(tmp_path / "src") == clean
    (tmp_path / "src" / "code.py").write_text("x = 2\n")  # a code change
    assert io.git_revision(tmp_path / "src") == f"{clean}-dirty"


def test_read_json_object_names_the_file_and_what_it_holds(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(KeyError, match=f"{path}: metrics file not found"):
        io.read_json_object(path, "metrics file", KeyError)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: unreadable metrics file \\(Expecting property name"):
        io.read_json_object(path, "metrics file")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{path}: metrics file is not a JSON object"):
        io.read_json_object(path, "metrics file")
    path.write_text('{"status": "completed"}')
    assert io.read_json_object(path, "metrics file") == {"status": "completed"}
