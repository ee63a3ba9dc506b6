"""Access to the LiteRT interpreter (imported only when a model runs).

`ai_edge_litert` is preferred; `tflite_runtime`, the older package with
the same interpreter API, is the fallback on boards without an
`ai-edge-litert` wheel.
"""

import contextlib
import os
import sys
import tempfile

from keras_attn_runtime import checks


@contextlib.contextmanager
def quiet_stderr(enabled=True):
    """Silences native (C/C++) writes to stderr inside the block.

    LiteRT and TensorFlow log from C++ straight to file descriptor 2
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), which
    Python cannot filter. The block's stderr goes to a temporary file
    instead; if the block raises, what it wrote is replayed to stderr,
    so nothing that explains an error is lost.
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
            raise
        else:
            _restore(saved)


def _restore(saved):
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def load_interpreter(model_path, num_threads=1, quiet=False):
    """A LiteRT `Interpreter` for a .tflite file.

    Raises:
        FileNotFoundError: if there is no file at `model_path`.
        ValueError: for a bad `num_threads` or a file LiteRT rejects.
        ImportError: if no LiteRT runtime is installed.
    """
    if not isinstance(model_path, (str, os.PathLike)) or not os.path.isfile(
        model_path
    ):
        raise FileNotFoundError(
            f"No model file. Received: model_path={str(model_path)!r}"
        )
    num_threads = checks.positive_int(num_threads, "num_threads")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "Running a .tflite needs the LiteRT runtime: "
                "`pip install ai-edge-litert`."
            ) from None
    try:
        with quiet_stderr(quiet):
            return Interpreter(model_path=os.fspath(model_path),
                               num_threads=num_threads)
    except ValueError as error:
        raise ValueError(
            f"Not a .tflite model: {error}. Received: "
            f"model_path={str(model_path)!r}"
        ) from None


def check_signatures(interpreter, model_path, expected, hint):
    """The interpreter's signature list, if it has every `expected` one."""
    signatures = interpreter.get_signature_list()
    missing = [name for name in expected if name not in signatures]
    if missing:
        raise ValueError(
            f"The model file has no signature {missing[0]!r}: {hint} "
            f"Received: model_path={str(model_path)!r} with signatures "
            f"{sorted(signatures)}"
        )
    return signatures


class SignatureRunner:
    """A LiteRT signature runner whose first call can be quiet.

    LiteRT allocates the signature's tensors and applies its delegates
    (XNNPACK) when the runner is made or on its first call, which is when
    it logs; later calls do not.
    """

    def __init__(self, interpreter, name, quiet=False):
        with quiet_stderr(quiet):
            self._runner = interpreter.get_signature_runner(name)
        self._quiet = quiet

    def get_input_details(self):
        return self._runner.get_input_details()

    def get_output_details(self):
        return self._runner.get_output_details()

    def __call__(self, **inputs):
        if self._quiet:
            with quiet_stderr():
                outputs = self._runner(**inputs)
            self._quiet = False
            return outputs
        return self._runner(**inputs)
