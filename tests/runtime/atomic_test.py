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
