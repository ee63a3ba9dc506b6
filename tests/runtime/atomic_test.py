"""Atomic writes: the file appears complete or not at all, with ordinary
permissions, and a failure leaves the old content and no temporary."""

import os
import stat

import pytest

from keras_attn_runtime import atomic


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_keeps_the_extension_and_moves_into_place(tmp_path):
    path = tmp_path / "sub" / "best.keras"
    with atomic.atomic_file(path) as tmp:
        assert tmp.endswith(".keras") and os.path.dirname(tmp) == str(
            path.parent)
        assert not path.exists()
        with open(tmp, "w") as f:
            f.write("complete")
    assert path.read_text() == "complete"
    assert os.listdir(path.parent) == ["best.keras"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask()


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic.atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["figure.png"]


def test_write_text_and_bytes(tmp_path):
    path = atomic.write_text(tmp_path / "v.txt", "schön\n[PAD]\n")
    assert open(path, "rb").read() == "schön\n[PAD]\n".encode()
    assert atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01") == str(
        tmp_path / "b.bin")
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "v.txt"]


def _dead_pid():
    """The id of a process that has exited."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX process ids")
def test_the_next_write_removes_what_killed_writers_left(tmp_path):
    """A writer killed outright (kill -9) leaves its temporary; the next
    write to the same path removes it, but never a live writer's, nor the
    temporaries of other paths."""
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    host = atomic._host()
    dead, alive = _dead_pid(), os.getpid()
    leftovers = [f".model.tflite.{dead}@{host}.abc123.tmp.tflite",
                 f".model.tflite.{dead}@{host}.def456.tmp"]
    kept = [f".model.tflite.{alive}@{host}.ghi789.tmp.tflite",
            f".other.tflite.{dead}@{host}.jkl012.tmp.tflite"]
    for name in leftovers + kept:
        if name.endswith(".tmp"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "saved_model.pb").write_bytes(b"partial")
        else:
            (tmp_path / name).write_bytes(b"partial")
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["model.tflite"])


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX process ids")
def test_a_directory_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    """Killed between the two renames of a directory swap: the old
    content sits under a `.old` name and nothing is at the path. The next
    writer restores it before doing anything else."""
    path = tmp_path / "saved_model"
    old = tmp_path / f".saved_model.{_dead_pid()}@{atomic._host()}.x1.old"
    old.mkdir()
    (old / "saved_model.pb").write_bytes(b"previous")
    assert atomic.remove_leftovers(path) == [old.name]
    assert (path / "saved_model.pb").read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["saved_model"]
