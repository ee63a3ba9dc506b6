"""Atomic writes: a file or directory appears at its path complete or not at
all.

Every writer here builds its result under a hidden temporary sibling (same
directory, hence same filesystem, so the final `os.replace` is a rename,
not a copy) and moves it into place only once it is fully written and
flushed. An interrupted write (an exception, Ctrl-C) removes the temporary
and leaves whatever was at the path before untouched. Files get the
permissions a plain `open()` would give them (`0o666` minus the umask).

A writer killed outright (`kill -9`, power loss) cannot clean up: its
temporary stays beside the path, named `.NAME.PID@HOST.*.tmp...`. The next
write to the same path removes the leftovers of writers that are no longer
running (same host, dead PID), and puts back an old directory that a
killed `atomic_directory` had moved aside (`.NAME.PID@HOST.*.old`) if
nothing replaced it. Leftovers of live writers are never touched.
"""

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile


def _parent_and_name(path):
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:
        raise ValueError(
            f"`path` must name a file or directory, not a root. Received: "
            f"path={path!r}"
        )
    os.makedirs(parent, exist_ok=True)
    return path, parent, name


def _host():
    # Short and free of dots and separators, unlike some host names.
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _prefix(name):
    """The start of the temporaries' names for `name`, with this process's
    id and host, so the next writer can tell when they are leftovers."""
    return f".{name}.{os.getpid()}@{_host()}."


def _is_running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_leftovers(path):
    """Removes what killed writers of `path` left beside it.

    Called by every writer here before it starts. Only POSIX has a safe way
    to ask whether a process is running; elsewhere this does nothing.

    Args:
        path: str or path-like. The file or directory being written.

    Returns:
        list of str: the names removed (or moved back to `path`).
    """
    if os.name != "posix":
        return []
    path, parent, name = _parent_and_name(path)
    pattern = re.compile(
        re.escape(f".{name}.") + r"(\d+)@" + re.escape(_host())
        + r"\.[^.]+\.(tmp.*|old)$"
    )
    done = []
    for entry in sorted(os.listdir(parent)):
        match = pattern.match(entry)
        if not match or _is_running(int(match.group(1))):
            continue
        leftover = os.path.join(parent, entry)
        if match.group(2) == "old" and not os.path.lexists(path):
            # Killed between the two renames of `_swap_into_place`: this
            # is the previous content, put it back.
            os.replace(leftover, path)
        elif os.path.isdir(leftover) and not os.path.islink(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        done.append(entry)
    return done


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform allows opening a
    # directory, and durability is a bonus on top of atomicity.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(path):
    """Context manager that yields a temporary path and moves it to `path`.

    The temporary file lies in the directory of `path` and ends with the
    same extension (`.keras`, `.png`), so writers that check the
    extension accept it. When the block exits normally, the file is
    flushed to disk and renamed over `path`; if the block raises, it is
    deleted and `path` keeps its old content.

    Args:
        path: str or path-like. Destination file; parent directories are
            created.

    Yields:
        str. The temporary path to write (it exists, empty).

    Raises:
        OSError: if the rename fails; `path` is then unchanged.

    Example:

    ```python
    import os
    import tempfile
    from keras_attn_runtime import atomic
    path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    with atomic.atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            f.write("complete")
    assert open(path).read() == "complete"
    ```
    """
    path, parent, name = _parent_and_name(path)
    remove_leftovers(path)
    extension = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=_prefix(name),
                               suffix=f".tmp{extension}", dir=parent)
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the permissions a
        # plain open() would, so written files can be copied and served.
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(parent)


def write_bytes(path, data):
    """Writes `data` to the file `path` atomically.

    The bytes go to a temporary file in the same directory, which is flushed
    to disk and renamed over `path` with `os.replace`. Readers see the old
    file or the new one, never a partial file.

    Args:
        path: str or path-like. Destination file; parent directories are
            created.
        data: bytes. The content.

    Returns:
        The absolute path written, as a str.

    Raises:
        OSError: if the file cannot be written; `path` is then unchanged and
            the temporary file is removed.

    Example:

    ```python
    import os
    import tempfile
    from keras_attn_runtime import atomic
    path = os.path.join(tempfile.mkdtemp(), "model.bin")
    atomic.write_bytes(path, b"abc")
    assert open(path, "rb").read() == b"abc"
    ```
    """
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return os.path.abspath(os.fspath(path))


def write_text(path, text):
    """`write_bytes` of `text` in UTF-8; line endings stay as given."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path):
    """Context manager that builds a directory and swaps it in at `path`.

    Yields an empty temporary directory next to `path`. When the block
    exits normally, anything already at `path` is moved aside, the
    temporary directory is renamed to `path`, and the old content is
    deleted. If the block raises, the temporary directory is deleted and
    `path` is left as it was.

    Replacing an existing `path` takes two renames, so for an instant
    between them nothing is at `path`; there is never a partial directory
    there. If the second rename fails the old content is moved back.

    Args:
        path: str or path-like. The directory to create or replace.

    Yields:
        str. The temporary directory to fill.

    Raises:
        OSError: if the swap fails; `path` then keeps its old content.

    Example:

    ```python
    import os
    import tempfile
    from keras_attn_runtime import atomic
    path = os.path.join(tempfile.mkdtemp(), "bundle")
    with atomic.atomic_directory(path) as tmp:
        open(os.path.join(tmp, "a.txt"), "w").write("a")
    assert os.listdir(path) == ["a.txt"]
    ```
    """
    path, parent, name = _parent_and_name(path)
    remove_leftovers(path)
    tmp = tempfile.mkdtemp(prefix=_prefix(name), suffix=".tmp", dir=parent)
    try:
        yield tmp
        _swap_into_place(tmp, path, parent, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_directory(parent)


def _swap_into_place(tmp, path, parent, name):
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    # A unique name for the old content, so a crash mid-swap leaves it
    # recoverable and never collides with a concurrent writer.
    old = tempfile.mkdtemp(prefix=_prefix(name), suffix=".old", dir=parent)
    os.rmdir(old)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.unlink(old)
