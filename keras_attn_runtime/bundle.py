"""One file to copy to a board: the runtime as a zipapp.

`build_zipapp("keras_attn_runtime.pyz")` zips this package's modules with
a `__main__.py` that runs its command line, so that

    python3 keras_attn_runtime.pyz generate lm.tflite --prompt "hi"

works on any machine with Python 3.11+, NumPy and LiteRT. The archive is
reproducible: sorted entries, fixed timestamps.
"""

import os
import stat
import zipfile

from keras_attn_runtime import atomic

SHEBANG = b"#!/usr/bin/env python3\n"
_MAIN = (
    '"""Runs the keras_attn runtime command line (see --help)."""\n'
    "import sys\n\n"
    "from keras_attn_runtime.cli import main\n\n"
    "sys.exit(main())\n"
)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def build_zipapp(path):
    """Writes the runtime zipapp to `path`, atomically.

    Args:
        path: str or `os.PathLike`. The .pyz file to write.

    Returns:
        The absolute path written, as a str.

    Raises:
        FileNotFoundError: if the runtime's sources are not plain files
            (a runtime that itself runs from a zipapp).

    Example:

    ```python
    import os
    import subprocess
    import sys
    import tempfile
    from keras_attn_runtime.bundle import build_zipapp
    path = build_zipapp(os.path.join(tempfile.mkdtemp(), "runtime.pyz"))
    subprocess.run([sys.executable, path, "--help"], check=True,
                   capture_output=True)
    ```
    """
    package = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isfile(os.path.join(package, "__init__.py")):
        raise FileNotFoundError(
            f"The runtime's sources are not files on disk (found "
            f"{package!r}); bundle from an installed keras_attn."
        )
    sources = sorted(name for name in os.listdir(package)
                     if name.endswith(".py"))
    with atomic.atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(SHEBANG)
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
                _add(archive, "__main__.py", _MAIN.encode("utf-8"))
                for name in sources:
                    with open(os.path.join(package, name), "rb") as source:
                        _add(archive, f"keras_attn_runtime/{name}",
                             source.read())
        # Executable wherever readable (the umask already applied).
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        os.chmod(tmp, mode | (mode & 0o444) >> 2)
    return os.path.abspath(os.fspath(path))


def _add(archive, name, data):
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)

