"""Atomic outputs: the target appears whole or not at all, on errors, Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mambadna.atomic import atomic_directory, atomic_file, temporary_name
from mambadna.errors import OutputExistsError


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _refuse_existing(target):
    if target.exists():
        raise OutputExistsError("output already exists", path=target)


def test_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and not target.exists()
    assert target.read_text() == "new" and not _hidden(tmp_path)
    with atomic_file(target) as tmp:  # no check: replaced
        tmp.write_text("newer")
    assert target.read_text() == "newer"


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, SystemExit])
def test_file_failure_leaves_the_target_as_it_was(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(error), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise error()
    assert target.read_text() == "old" and not _hidden(tmp_path)


def test_check_runs_before_the_work_and_before_the_rename(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(OutputExistsError), atomic_file(target, check=_refuse_existing):
        pytest.fail("the block must not run")
    target.unlink()
    with pytest.raises(OutputExistsError), atomic_file(target, check=_refuse_existing) as tmp:
        tmp.write_text("new")
        target.write_text("someone else's")  # appears while we work: not clobbered
    assert target.read_text() == "someone else's" and not _hidden(tmp_path)


def test_directory_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "deep" / "store"
    with atomic_directory(target) as tmp:  # parents created
        (tmp / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with atomic_directory(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert not _hidden(target.parent)


def test_directory_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "a").write_text("new")
        raise KeyboardInterrupt
    assert (target / "a").read_text() == "old" and not _hidden(tmp_path)


def test_directory_merge_touches_only_the_named_files(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    for name, text in [("weights", "old"), ("labels", "old"), ("notes", "mine")]:
        (target / name).write_text(text)
    with atomic_directory(target, merge=("weights", "labels", "config")) as tmp:
        (tmp / "weights").write_text("new")
        (tmp / "config").write_text("new")
    assert {p.name: p.read_text() for p in target.iterdir()} == {
        "weights": "new", "config": "new", "notes": "mine"}  # stale labels removed
    assert not _hidden(tmp_path)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32",
                    reason="POSIX signals")
def test_sigterm_cleans_up_and_exits(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from mambadna.atomic import atomic_directory, atomic_file
        folder = Path({str(tmp_path)!r})
        with atomic_directory(folder / "store") as d, atomic_file(folder / "f.txt") as f:
            (d / "a").write_text("half")
            f.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            print("not reached")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "not reached" not in proc.stdout
    assert os.listdir(tmp_path) == []


def test_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic_file(tmp_path / "a") as tmp:
        tmp.write_text("x")
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkill_leftovers_are_removed_by_the_next_write_and_only_ours(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from mambadna.atomic import atomic_directory, atomic_file
        folder = Path({str(tmp_path)!r})
        with atomic_directory(folder / "store") as d, atomic_file(folder / "f.txt") as f:
            (d / "a").write_text("half")
            f.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(_hidden(tmp_path))
    assert len(left) == 2  # SIGKILL cannot be caught: the temporaries stay ...
    (tmp_path / ".mine.txt.abcdef-1.0123abcd.tmp").write_text("other host's")  # not ours here
    (tmp_path / ".hidden").write_text("the user's")
    live = temporary_name(tmp_path / "g.txt")  # this (running) process's: kept
    live.write_text("in progress")
    with atomic_file(tmp_path / "f.txt") as f:  # ... until the next write into the folder
        f.write_text("whole")
    assert (tmp_path / "f.txt").read_text() == "whole"
    assert sorted(_hidden(tmp_path)) == sorted(
        [".hidden", ".mine.txt.abcdef-1.0123abcd.tmp", live.name])
