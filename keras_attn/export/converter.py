"""The one SavedModel -> TFLite path that every exporter calls.

`convert(archive, signature_keys, quantization, representative_examples)`
writes a `keras.export.ExportArchive` to a temporary SavedModel, converts
the named signatures with `tf.lite.TFLiteConverter` and builtin ops only
(never select-TF ops: a Flex op would tie the file to the multi-megabyte
TF runtime on device), quantizes, turns converter errors that name ops
into `UnsupportedOpsError`, and rejects files that still hold Flex,
custom or `WHILE` ops. It returns the bytes; the exporter writes them.

An exporter brings its own signatures (the classifier's
`serving_default`; the generator's `prefill`/`decode`/`encode`; the
LiteRT-LM bundle's `prefill_<T>`/`decode`) and its own file-level steps.
int4 is one: `quantize_int4` takes the bytes of `convert(...,
quantization=None)` and quantizes them with ai-edge-quantizer recipes.

Quantization (`quantization=`):
    None: float32 weights and compute.
    "float16": float16 weights, dequantized to float32 at load; float32
        compute. Half the size.
    "dynamic_int8": int8 weights (per channel; the converter leaves
        tensors under 1024 values in float32); matrix products quantize
        their activations on the fly, the rest runs in float32. About a
        quarter of the size.
    "int8": static int8 quantization calibrated on representative
        examples (one signature only): int8 weights, and int8 activations
        into and out of the dense projections (FULLY_CONNECTED), the
        embedding lookup (GATHER) and GELU. Inputs stay int32 token ids,
        outputs float32. The op types in `INT8_FLOAT_OPS` stay float32,
        with QUANTIZE/DEQUANTIZE around them (selective quantization with
        TFLite's quantization debugger), and so does an output layer with
        at most `INT8_FLOAT_OUTPUT_MAX_WEIGHTS` weights.

int4 (`quantize_int4`, after conversion; generator and LiteRT-LM files):
    block-wise int4 weights (32, 64 or 128 values share one float16
    scale, along each weight's input axis) for the chosen components:
    "attention" (query/key/value/output projections), "ffn" (the
    feedforward layers) and "embedding" (the token table, read through
    EMBEDDING_LOOKUP, with the output projection that shares it when the
    weights are tied; see `keras_attn.export.embedding_lookup`). The
    FULLY_CONNECTED kernels quantize their activations on the fly
    (ai-edge-quantizer's "dynamic" mode); everything else stays float32,
    as do weights under 1024 values (the rotary angles' tiny matmul).
    About 15% of the float32 size with all three components.

Why "int8" keeps those ops in float. Quantizing everything breaks
attention models: the attention mask fills masked scores with a huge
negative number (-1e9, or -0.7 x the float32 maximum in Keras's fused
path), and an int8 SELECT_V2 shares one scale between that fill and the
real scores, which then all round to the same value: attention turns
uniform over every position, padding included. Layer norm's
`variance + epsilon` loses small variances (padded positions) in int8 and
RSQRT amplifies the error; the masked mean pooling sums over the
sequence; and an int8 output layer clips logits beyond the calibrated
range (short inputs of a random classifier: 3.71 came out as 3.30).
Measured on a trained `encoder_classifier` (vocabulary 8000, length 64, 2
layers, width 128, 4 heads; logits up to 4; 128 held-out inputs; batch 1,
1 thread), max abs diff to Keras / argmax agreement / latency:
    everything int8:                        1.31  / 98.4% / 1.85 ms
    float attention scores (MUL, SELECT_V2,
        SOFTMAX):                           0.47  / 100%  / 1.77 ms
    + BATCH_MATMUL, layer norm ops:         0.21  / 100%  / 0.91 ms
    + ADD (residuals, epsilon):             0.13  / 100%  / 0.88 ms
    + SUM, DIV (pooling):                   0.071 / 100%  / 0.88 ms
    + float classifier head (the choice):   0.063 / 100%  / 0.89 ms
(float32 is 0.78 ms: on this CPU int8 buys size, not speed.) A vocabulary
projection stays int8, as a float copy of a tied embedding matrix would
double the file; calibrate language models on real text so the logit
range covers confident predictions.
"""

import contextlib
import io
import re
import shutil
import tempfile
import warnings

from keras_attn.export import flatbuffer
from keras_attn_runtime.tflite_file import TFLiteFile

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
INT4_BLOCK_SIZES = (32, 64, 128)
INT4_COMPONENTS = ("attention", "ffn", "embedding")
# Regexes on an op's output tensor names (its scope for the quantizer),
# which carry the Keras layer paths ("decoder_layer_0_1/self_attention_1/
# query_1/MatMul"). "embedding" is the EMBEDDING_LOOKUP and every
# FULLY_CONNECTED of neither other component: the output projection, whose
# output the converter may rename (a signature output).
_INT4_SCOPES = {"attention": "self_attention|cross_attention",
                "ffn": "feedforward"}
# Weights below this many values stay float32 (int4 saves nothing there,
# and a block would not fit, e.g. the rotary angles' (H/2, 1) matmul).
INT4_MIN_WEIGHTS = 1024

# Op types that "int8" keeps in float32 (why: the module docstring).
INT8_FLOAT_OPS = (
    "BATCH_MATMUL", "MUL", "SELECT_V2", "SOFTMAX",  # attention scores
    "ADD", "MEAN", "SQUARED_DIFFERENCE", "RSQRT",  # layer norm, residuals
    "SUM", "DIV",  # masked mean pooling
)
# "int8" also keeps an output layer float32 when it has at most this many
# weights (a classifier head, not a vocabulary projection).
INT8_FLOAT_OUTPUT_MAX_WEIGHTS = 65536

# Builtin ops that run a subgraph (control flow) are rejected too: a `WHILE`
# means a Python loop was not unrolled and the model will be slow and
# delegate-unfriendly on device.
REJECTED_BUILTINS = ("WHILE",)


class UnsupportedOpsError(ValueError):
    """The model needs ops outside the TFLite builtin op set (Flex/select-TF
    ops, custom ops, or `WHILE`).

    Attributes:
        ops: sorted list of the offending op names.
    """

    def __init__(self, ops):
        self.ops = sorted(set(ops))
        loops = [op for op in self.ops if op in REJECTED_BUILTINS]
        others = [op for op in self.ops if op not in REJECTED_BUILTINS]
        message = ("The model cannot be exported to TFLite with builtin ops "
                   f"only. Offending ops: {', '.join(self.ops)}.")
        if others:
            message += (
                f" {', '.join(others)}: not TFLite builtin ops (they would "
                "need Flex/select-TF or custom kernels); rewrite them with "
                "keras.ops that have builtin TFLite kernels."
            )
        if loops:
            message += (
                f" {', '.join(loops)}: a loop with a data-dependent trip "
                "count; unroll it (a Python loop over a static count)."
            )
        super().__init__(message)

    def __reduce__(self):  # pickles (e.g. across processes) with its ops
        return type(self), (self.ops,)


def check_quantization(quantization, allowed=QUANTIZATIONS, why=""):
    """Raises a ValueError unless `quantization` is one of `allowed`.

    Args:
        quantization: the value received.
        allowed: tuple. The modes this exporter offers.
        why: str. Appended to the message (e.g. why a mode is not offered).
    """
    if quantization not in allowed:
        raise ValueError(
            "Received an invalid value for argument `quantization`, expected "
            f"one of {allowed}{why}. Received: quantization={quantization!r}"
        )


_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"'tf\.(\w+)' op is not supported"),
)
_OP_LIST_PATTERN = re.compile(
    r"^\s*(?:TF Select ops|Custom ops|Flex ops):\s*(.+)$", re.M
)


def ops_in_converter_error(message):
    """Op names (without the `tf.` prefix) that a converter error blames."""
    ops = set()
    for pattern in _OP_PATTERNS:
        ops.update(pattern.findall(message))
    for match in _OP_LIST_PATTERN.findall(message):
        ops.update(op.strip() for op in match.split(",") if op.strip())
    return sorted(ops)


def check_builtin_ops(model_bytes):
    """Raises `UnsupportedOpsError` if a .tflite flatbuffer holds Flex,
    custom or `WHILE` ops."""
    codes = TFLiteFile(model_bytes, name="the model").op_codes
    rejected = sorted({
        name for name, custom in codes
        if custom or name.upper().startswith("FLEX") or name == "CUSTOM"
        or name in REJECTED_BUILTINS
    })
    if rejected:
        raise UnsupportedOpsError(rejected)


def _tf_converter(saved_model_dir, signature_keys, quantization, examples):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(examples)
        # INT8 kernels first; TFLITE_BUILTINS lets the ops in
        # INT8_FLOAT_OPS (and any op without an int8 kernel) stay float32.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    return converter


def _run(converter, quantization):
    import tensorflow as tf

    if quantization != "int8":
        return converter.convert()
    # The quantization debugger is TFLite's public API for selective
    # quantization: it calibrates once, then quantizes everything except
    # the denylisted op types. TF's calibrator runs the deprecated
    # tf.lite.Interpreter internally; its warning is not about our code.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(INT8_FLOAT_OPS))
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_options=options)
        # Set after calibration: the names come from the calibrated model.
        options.denylisted_nodes = flatbuffer.small_output_tensors(
            debugger.calibrated_model, INT8_FLOAT_OUTPUT_MAX_WEIGHTS)
        return debugger.get_nondebug_quantized_model()


def convert(archive, signature_keys, quantization=None,
            representative_examples=None):
    """Converts the endpoints of an export archive to .tflite bytes.

    Args:
        archive: `keras.export.ExportArchive` with the endpoints to convert.
        signature_keys: list of str. The endpoint names that become the
            file's signatures.
        quantization: one of `QUANTIZATIONS` (see the module docstring).
            Defaults to `None` (float32).
        representative_examples: for `"int8"`: a list of batch-1 dicts
            `{input name: array}` of the one signature, used to calibrate.

    Returns:
        bytes: the .tflite flatbuffer, builtin ops only.

    Raises:
        ValueError: for an unknown `quantization`, or `"int8"` without
            examples or with several signatures.
        UnsupportedOpsError: if the model needs Flex, custom or `WHILE`
            ops.
    """
    check_quantization(quantization)
    signature_keys = list(signature_keys)
    if quantization == "int8" and (not representative_examples
                                   or len(signature_keys) != 1):
        raise ValueError(
            "`quantization='int8'` calibrates one signature on "
            "representative examples. Received: "
            f"{len(representative_examples or [])} examples for signatures "
            f"{signature_keys}"
        )
    saved_model_dir = tempfile.mkdtemp(prefix="keras_attn_tflite_")
    try:
        archive.write_out(saved_model_dir, verbose=False)
        converter = _tf_converter(saved_model_dir, signature_keys,
                                  quantization, representative_examples)
        try:
            model_bytes = _run(converter, quantization)
        except Exception as e:  # the converter's error class is private
            ops = ops_in_converter_error(str(e))
            if ops:
                raise UnsupportedOpsError(ops) from e
            raise
    finally:
        shutil.rmtree(saved_model_dir, ignore_errors=True)
    check_builtin_ops(model_bytes)
    return model_bytes


def check_int4(block_size, components):
    """Returns `components` as a tuple, after checking both arguments."""
    if isinstance(block_size, bool) or block_size not in INT4_BLOCK_SIZES:
        raise ValueError(
            "Received an invalid value for argument `int4_block_size`, "
            f"expected one of {INT4_BLOCK_SIZES}. Received: "
            f"int4_block_size={block_size!r}"
        )
    if isinstance(components, str):
        components = (components,)
    try:
        components = tuple(components)
    except TypeError:
        components = None
    if not components or any(c not in INT4_COMPONENTS for c in components):
        raise ValueError(
            "Received an invalid value for argument `int4_components`, "
            f"expected a non-empty sequence of {INT4_COMPONENTS}. Received: "
            f"int4_components={components!r}"
        )
    return tuple(dict.fromkeys(components))


def int4_recipe(block_size=32, components=INT4_COMPONENTS):
    """The ai-edge-quantizer recipe of `quantize_int4`: a list of op
    configs (the quantizer's JSON recipe form)."""
    components = check_int4(block_size, components)
    config = {
        "weight_tensor_config": {
            "num_bits": 4, "symmetric": True, "dtype": "INT",
            "granularity": f"BLOCKWISE_{block_size}",
        },
        # Dynamic: int4 weights, activations quantized by the kernel.
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "min_weight_elements": INT4_MIN_WEIGHTS,
    }

    def entry(regex, operation, algorithm="min_max_uniform_quantize"):
        return {"regex": regex, "operation": operation,
                "algorithm_key": algorithm, "op_config": config}

    if "embedding" not in components:
        return [entry(_INT4_SCOPES[component], "FULLY_CONNECTED")
                for component in components]
    # Later entries override earlier ones for the ops they match.
    recipe = [entry(".*", "FULLY_CONNECTED"),
              entry(".*", "EMBEDDING_LOOKUP")]
    recipe += [entry(_INT4_SCOPES[component], "FULLY_CONNECTED",
                     "no_quantize")
               for component in ("attention", "ffn")
               if component not in components]
    return recipe


def quantize_int4(model_bytes, block_size=32, components=INT4_COMPONENTS):
    """Block-wise int4 weights for a float32 .tflite, by ai-edge-quantizer.

    Args:
        model_bytes: bytes. A float32 file from `convert`.
        block_size: int. 32, 64 or 128: values per scale along each
            weight's input axis, which it must divide.
        components: sequence of `"attention"`, `"ffn"`, `"embedding"`.

    Returns:
        bytes: the quantized file, builtin ops only.

    Raises:
        ImportError: without ai-edge-quantizer (`pip install
            ai-edge-quantizer`, part of keras_attn's `export` extra).
        ValueError: for a bad argument, or a weight whose input axis the
            block size does not divide.
    """
    recipe = int4_recipe(block_size, components)
    try:
        from ai_edge_quantizer import quantizer
    except ImportError:
        raise ImportError(
            "int4 quantization needs ai-edge-quantizer: `pip install "
            "ai-edge-quantizer` (or keras-attn[export])."
        ) from None
    try:
        # Quiet: INFO log lines, progress bars, a size summary on stdout.
        with warnings.catch_warnings(), _quiet_absl(), \
                contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            result = quantizer.Quantizer(bytearray(model_bytes),
                                         recipe).quantize()
    except Exception as error:  # the quantizer raises plain exceptions
        if "block size" in str(error):
            raise ValueError(
                "Received an invalid value for argument `int4_block_size`, "
                "expected a divisor of the input size of every quantized "
                f"weight. Received: int4_block_size={block_size} ("
                f"{' '.join(str(error).split())[:300]})"
            ) from None
        raise
    quantized = bytes(result.quantized_model)
    check_builtin_ops(quantized)
    return quantized


class _quiet_absl:
    """Lowers absl's log level inside the block (ai-edge-quantizer logs an
    INFO line per op)."""

    def __enter__(self):
        try:
            from absl import logging
        except ImportError:
            self.logging = None
            return self
        self.logging = logging
        self.level = logging.get_verbosity()
        logging.set_verbosity(logging.ERROR)
        return self

    def __exit__(self, *exc):
        if self.logging is not None:
            self.logging.set_verbosity(self.level)
        return False
