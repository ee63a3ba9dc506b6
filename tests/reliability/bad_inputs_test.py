"""Bad input at every public entry point: a clear error naming the culprit.

Each case calls one public entry point (its id starts with it) with one
bad argument and asserts the exception type and that the message names
the argument and the value received: never a backend traceback, never a
silent wrong answer. The command-line cases assert one line `keras-attn
CMD: error: ...` and exit status 2.

Cases with a `traced` call run again under `jit_compile` (TensorFlow) or
`jax.jit` (JAX), where a check written against concrete values would be
skipped: shape and dtype checks raise there too. Value checks (token ids
in range, mask values) need the values; inside a compiled function a mask
with values other than 0 and 1 turns the output into NaN instead
(`test_a_traced_invalid_mask_gives_nan`), and token ids are checked where
they enter as NumPy: `generate`, the exporters, the data pipelines.
"""

import functools
import os
import types

import keras
import numpy as np
import pytest

from keras_attn import cli
from keras_attn import data
from keras_attn import export
from keras_attn import layers
from keras_attn import models
from keras_attn import training
from keras_attn import visualize
from keras_attn.ops import scaled_dot_product_attention
from keras_attn_runtime import Classifier
from keras_attn_runtime import Generator
from keras_attn_runtime import TFLiteFile
from keras_attn_runtime import WordPieceTokenizer
from keras_attn_runtime import load_vocabulary
from keras_attn_runtime import make_sampler

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(16)]
ADDITIVE = np.array([[0.0, -1e9, -1e9], [0.0, 0.0, -1e9], [0.0, 0.0, 0.0]],
                    "float32")  # (T, S): 0 = attend, -1e9 = masked


def x(*shape):
    return np.random.default_rng(0).random(shape).astype("float32")


def ids(*rows):
    return np.array(rows, "int32")


# Objects the cases share, made on first use (collection stays fast).


@functools.cache
def built():
    """Layers built for width 8 (rank-3 inputs `(1, 3, 8)`)."""
    keras.utils.set_random_seed(0)
    x8 = x(1, 3, 8)
    objects = dict(
        mha=layers.MultiHeadAttention(num_heads=2, key_dim=4),
        gqa=layers.GroupQueryAttention(head_dim=4, num_query_heads=4,
                                       num_key_value_heads=2),
        encoder=layers.TransformerEncoder(16, 2),
        decoder=layers.TransformerDecoder(16, 2),
        embedding=layers.TokenAndPositionEmbedding(10, 4, 8),
        positions=layers.PositionEmbedding(4),
        sdpa=layers.ScaledDotProductAttention(),
    )
    objects["mha"](x8, x8)
    objects["gqa"](x8, x8)
    objects["encoder"](x8)
    objects["decoder"](x8, x8)
    objects["embedding"](ids([1, 2]))
    objects["positions"](x8)
    return types.SimpleNamespace(**objects)


@functools.cache
def model(kind):
    keras.utils.set_random_seed(0)
    if kind == "lm":
        return models.decoder_lm(20, 8, num_layers=1, hidden_dim=8,
                                 num_heads=2)
    if kind == "seq2seq":
        return models.seq2seq(20, 20, source_length=5, target_length=8,
                              num_layers=1, hidden_dim=8, num_heads=2)
    return models.encoder_classifier(20, 6, num_layers=1, hidden_dim=8,
                                     num_heads=2)


@functools.cache
def files():
    """Good and broken files: a .keras model, .tflite files, vocabularies.
    """
    import tempfile

    folder = tempfile.mkdtemp(prefix="keras_attn_bad_inputs_")

    def path(name):
        return os.path.join(folder, name)

    classifier = model("classifier")
    classifier.save(path("classifier.keras"))
    good = open(path("classifier.keras"), "rb").read()
    open(path("truncated.keras"), "wb").write(good[:len(good) // 2])
    # Zero a stretch of the first member's data: the zip reads, the CRC
    # check fails.
    corrupt = bytearray(good)
    corrupt[100:140] = bytes(40)
    open(path("bad_crc.keras"), "wb").write(bytes(corrupt))
    with open(path("vocabulary.txt"), "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in VOCABULARY))
    open(path("binary.txt"), "wb").write(b"\xff\xfe\x00\x80garbage")
    open(path("cut.txt"), "w").write("[PAD]\n[UN")
    names = {}
    if ON_TENSORFLOW:
        small = models.encoder_classifier(len(VOCABULARY), 6, num_layers=1,
                                          hidden_dim=8, num_heads=2)
        export.export_tflite(small, path("classifier.tflite"),
                             vocabulary=VOCABULARY, latency_runs=1)
        lm = models.decoder_lm(len(VOCABULARY), 8, num_layers=1,
                               hidden_dim=8, num_heads=2)
        export.export_generator_tflite(lm, path("lm.tflite"),
                                       vocabulary=VOCABULARY,
                                       sample_prompts=[])
        blob = open(path("classifier.tflite"), "rb").read()
        open(path("truncated.tflite"), "wb").write(blob[:len(blob) // 3])
        names = dict(classifier=path("classifier.tflite"),
                     lm=path("lm.tflite"),
                     truncated_tflite=path("truncated.tflite"))
    return types.SimpleNamespace(
        folder=folder,
        keras=path("classifier.keras"),
        truncated_keras=path("truncated.keras"),
        bad_crc_keras=path("bad_crc.keras"),
        vocabulary=path("vocabulary.txt"),
        binary_vocabulary=path("binary.txt"),
        cut_vocabulary=path("cut.txt"),
        missing=path("missing.keras"),
        **names,
    )


def tokenizer():
    return data.make_tokenizer(VOCABULARY, 4)


class Case:
    """One bad call: `call()` must raise `error` with every string of
    `names` in its message; `traced()` -> `(fn, args)` runs it compiled."""

    def __init__(self, id, call, error, *names, traced=None, tflite=False):
        self.id, self.call, self.error, self.names = id, call, error, names
        self.traced, self.tflite = traced, tflite


class Cli:
    """One bad command line: exit status 2 and one `error:` line."""

    def __init__(self, id, argv, *names, tflite=False):
        self.id, self.argv, self.names, self.tflite = id, argv, names, tflite


def _op(q=None, k=None, v=None, **kwargs):
    q = x(1, 3, 2, 4) if q is None else q
    k = q if k is None else k
    v = k if v is None else v
    return scaled_dot_product_attention(q, k, v, **kwargs)


def _mha(**kwargs):
    return layers.MultiHeadAttention(**{"num_heads": 2, "key_dim": 4,
                                        **kwargs})


def _generate(which="lm", prompt=((1, 2),), new=3, **kwargs):
    return models.generate(model(which), [list(r) for r in prompt], new,
                           **kwargs)


CASES = [
    # keras_attn.ops.scaled_dot_product_attention
    Case("op-query-rank", lambda: _op(q=x(1, 3, 8)), ValueError,
         "`query`", "query.shape=(1, 3, 8)",
         traced=lambda: (lambda q: _op(q=q), [x(1, 3, 8)])),
    Case("op-head-size", lambda: _op(k=x(1, 3, 2, 5)), ValueError,
         "`query` and `key`", "key.shape=(1, 3, 2, 5)",
         traced=lambda: (lambda k: _op(k=k), [x(1, 3, 2, 5)])),
    Case("op-value-length", lambda: _op(v=x(1, 4, 2, 4)), ValueError,
         "`value`", "value.shape=(1, 4, 2, 4)"),
    Case("op-heads-not-multiple", lambda: _op(k=x(1, 3, 3, 4)), ValueError,
         "key/value heads", "key/value heads=3"),
    Case("op-batch", lambda: _op(q=x(3, 3, 2, 4), k=x(1, 3, 2, 4)),
         ValueError, "same batch size", "query.shape=(3, 3, 2, 4)",
         traced=lambda: (lambda q, k: _op(q=q, k=k),
                         [x(3, 3, 2, 4), x(1, 3, 2, 4)])),
    Case("op-mask-rank", lambda: _op(mask=np.ones((1, 1, 1, 3, 3), bool)),
         ValueError, "`mask`", "mask.shape=(1, 1, 1, 3, 3)"),
    Case("op-mask-key-length", lambda: _op(mask=np.ones((3, 5), bool)),
         ValueError, "`mask`", "mask.shape=(3, 5)",
         traced=lambda: (lambda m: _op(mask=m), [np.ones((3, 5), bool)])),
    Case("op-mask-additive", lambda: _op(mask=ADDITIVE), ValueError,
         "`mask`", "-1000000000.0"),
    Case("op-mask-int-2", lambda: _op(mask=np.full((3, 3), 2)), ValueError,
         "`mask`", "mask=[[2, 2, 2], [2, 2, 2], [2, 2, 2]]"),
    Case("op-bias-batch", lambda: _op(bias=np.zeros((3, 1, 3, 3), "float32")),
         ValueError, "`bias`", "bias.shape=(3, 1, 3, 3)",
         traced=lambda: (lambda b: _op(bias=b),
                         [np.zeros((3, 1, 3, 3), "float32")])),
    Case("op-bias-rank", lambda: _op(bias=np.zeros((1, 1, 1, 3, 3))),
         ValueError, "`bias`", "bias.shape=(1, 1, 1, 3, 3)"),
    Case("op-scale-zero", lambda: _op(scale=0.0), ValueError, "`scale`",
         "scale=0.0"),
    Case("op-scale-negative", lambda: _op(scale=-1.0), ValueError,
         "`scale`", "scale=-1.0"),
    Case("op-scale-nan", lambda: _op(scale=float("nan")), ValueError,
         "`scale`", "scale=nan"),
    Case("op-dropout-rate", lambda: _op(dropout_rate=1.0), ValueError,
         "`dropout_rate`", "dropout_rate=1.0"),
    Case("op-sliding-window", lambda: _op(sliding_window=0), ValueError,
         "`sliding_window`", "sliding_window=0"),
    Case("op-implementation", lambda: _op(implementation="fast"),
         ValueError, "`implementation`", "implementation='fast'"),
    Case("op-flash-attention", lambda: _op(flash_attention="yes"),
         ValueError, "`flash_attention`", "flash_attention='yes'"),
    Case("op-fused-with-weights",
         lambda: _op(implementation="fused", return_weights=True),
         ValueError, "implementation='fused'", "return_weights=True"),
    # keras_attn.layers.ScaledDotProductAttention
    Case("ScaledDotProductAttention-dropout",
         lambda: layers.ScaledDotProductAttention(dropout=1.5), ValueError,
         "`dropout`", "dropout=1.5"),
    Case("ScaledDotProductAttention-scale",
         lambda: layers.ScaledDotProductAttention(scale=0), ValueError,
         "`scale`", "scale=0"),
    Case("ScaledDotProductAttention.call-mask-additive",
         lambda: built().sdpa(x(1, 3, 2, 4), x(1, 3, 2, 4), x(1, 3, 2, 4),
                              mask=ADDITIVE),
         ValueError, "`mask`", "-1000000000.0"),
    # keras_attn.layers.MultiHeadAttention: constructor
    Case("KVCache-num_heads", lambda: layers.KVCache.zeros(1, 0, 4, 8),
         ValueError, "`num_heads`", "num_heads=0"),
    Case("KVCache-update-heads",
         lambda: layers.KVCache.zeros(1, 2, 4, 8).update(
             0, x(1, 1, 3, 8), x(1, 1, 3, 8)),
         ValueError, "`keys`", "keys.shape=(1, 1, 3, 8)"),
    Case("KVCache-update-index",
         lambda: layers.KVCache.zeros(1, 2, 4, 8).update(
             4, x(1, 1, 2, 8), x(1, 1, 2, 8)),
         ValueError, "cache_update_index", "cache_update_index=4"),
    Case("MultiHeadAttention-num_heads", lambda: _mha(num_heads=0),
         ValueError, "`num_heads`", "num_heads=0"),
    Case("MultiHeadAttention-key_dim-float", lambda: _mha(key_dim=4.0),
         ValueError, "`key_dim`", "key_dim=4.0"),
    Case("MultiHeadAttention-value_dim", lambda: _mha(value_dim=-1),
         ValueError, "`value_dim`", "value_dim=-1"),
    Case("MultiHeadAttention-dropout", lambda: _mha(dropout=1.0),
         ValueError, "`dropout`", "dropout=1.0"),
    Case("MultiHeadAttention-num_key_value_heads",
         lambda: _mha(num_heads=4, num_key_value_heads=3), ValueError,
         "`num_key_value_heads`", "num_key_value_heads=3"),
    Case("MultiHeadAttention-output_shape", lambda: _mha(output_shape=0),
         ValueError, "`output_shape`", "output_shape=0"),
    Case("MultiHeadAttention-attention_axes",
         lambda: _mha(attention_axes="a"), ValueError, "`attention_axes`",
         "attention_axes='a'"),
    Case("MultiHeadAttention-sliding_window",
         lambda: _mha(sliding_window=-2), ValueError, "`sliding_window`",
         "sliding_window=-2"),
    Case("MultiHeadAttention-flash_attention",
         lambda: _mha(flash_attention=1), ValueError, "`flash_attention`",
         "flash_attention=1"),
    Case("MultiHeadAttention-rotary_max_wavelength",
         lambda: _mha(rotary_max_wavelength=-1), ValueError,
         "`rotary_max_wavelength`", "rotary_max_wavelength=-1"),
    Case("MultiHeadAttention-rotary-odd-key_dim",
         lambda: _mha(key_dim=3, rotary_max_wavelength=10000), ValueError,
         "`key_dim`", "key_dim=3"),
    # keras_attn.layers.MultiHeadAttention: call
    Case("MultiHeadAttention.call-query-width",
         lambda: built().mha(x(1, 3, 6), x(1, 3, 8)), ValueError,
         "`query`", "query.shape=(1, 3, 6)",
         traced=lambda: (lambda q, v: built().mha(q, v),
                         [x(1, 3, 6), x(1, 3, 8)])),
    Case("MultiHeadAttention.call-value-width",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 6)), ValueError,
         "`value`", "value.shape=(1, 3, 6)",
         traced=lambda: (lambda q, v: built().mha(q, v),
                         [x(1, 3, 8), x(1, 3, 6)])),
    Case("MultiHeadAttention.call-query-rank",
         lambda: _mha()(x(3, 8), x(3, 8)), ValueError, "`query`",
         "query_shape=(3, 8)"),
    Case("MultiHeadAttention.call-attention_axes-range",
         lambda: _mha(attention_axes=(3,))(x(1, 3, 8), x(1, 3, 8)),
         ValueError, "`attention_axes`", "attention_axes=(3,)"),
    Case("MultiHeadAttention.call-query_mask-shape",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8),
                             query_mask=np.ones((1, 5), bool)),
         ValueError, "`query_mask`", "query_mask.shape=(1, 5)",
         traced=lambda: (lambda q, m: built().mha(q, q, query_mask=m),
                         [x(1, 3, 8), np.ones((1, 5), bool)])),
    Case("MultiHeadAttention.call-value_mask-shape",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8),
                             value_mask=np.ones((1, 4), bool)),
         ValueError, "`value_mask`", "value_mask.shape=(1, 4)"),
    Case("MultiHeadAttention.call-key_mask-shape",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8),
                             key_mask=np.ones((1, 4), bool)),
         ValueError, "`key_mask`", "key_mask.shape=(1, 4)",
         traced=lambda: (lambda q, m: built().mha(q, q, key_mask=m),
                         [x(1, 3, 8), np.ones((1, 4), bool)])),
    Case("MultiHeadAttention.call-attention_mask-shape",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8),
                             attention_mask=np.ones((1, 3, 4), bool)),
         ValueError, "`attention_mask`", "attention_mask.shape=",
         traced=lambda: (lambda q, m: built().mha(q, q, attention_mask=m),
                         [x(1, 3, 8), np.ones((1, 3, 4), bool)])),
    Case("MultiHeadAttention.call-attention_mask-additive",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8), attention_mask=ADDITIVE),
         ValueError, "`attention_mask`", "-1000000000.0"),
    Case("MultiHeadAttention.call-query_mask-values",
         lambda: built().mha(x(1, 3, 8), x(1, 3, 8),
                             query_mask=np.array([[1.0, 0.5, 0.0]])),
         ValueError, "`query_mask`", "0.5"),
    # keras_attn.layers.GroupQueryAttention
    Case("GroupQueryAttention-heads",
         lambda: layers.GroupQueryAttention(4, 4, 3), ValueError,
         "num_key_value_heads", "num_key_value_heads=3"),
    Case("GroupQueryAttention-head_dim",
         lambda: layers.GroupQueryAttention(0, 4, 2), ValueError,
         "`head_dim`", "head_dim=0"),
    Case("GroupQueryAttention.call-query-width",
         lambda: built().gqa(x(1, 3, 6), x(1, 3, 6)), ValueError,
         "`query`", "query.shape=(1, 3, 6)",
         traced=lambda: (lambda q: built().gqa(q, q), [x(1, 3, 6)])),
    # keras_attn.layers.TransformerEncoder
    Case("TransformerEncoder-intermediate_dim",
         lambda: layers.TransformerEncoder(0, 2), ValueError,
         "`intermediate_dim`", "intermediate_dim=0"),
    Case("TransformerEncoder-layer_norm_epsilon",
         lambda: layers.TransformerEncoder(8, 2, layer_norm_epsilon=0),
         ValueError, "`layer_norm_epsilon`", "layer_norm_epsilon=0"),
    Case("TransformerEncoder-activation",
         lambda: layers.TransformerEncoder(8, 2, activation="nope"),
         ValueError, "`activation`", "activation='nope'"),
    Case("TransformerEncoder.build-num_heads",
         lambda: layers.TransformerEncoder(8, 3)(x(1, 3, 8)), ValueError,
         "num_heads=3", "hidden size 8"),
    Case("TransformerEncoder.call-width",
         lambda: built().encoder(x(1, 3, 6)), ValueError, "`inputs`",
         "inputs.shape=(1, 3, 6)",
         traced=lambda: (built().encoder, [x(1, 3, 6)])),
    Case("TransformerEncoder.call-padding_mask-shape",
         lambda: built().encoder(x(1, 3, 8),
                                 padding_mask=np.ones((1, 5), bool)),
         ValueError, "`padding_mask`", "padding_mask.shape=(1, 5)",
         traced=lambda: (lambda s, m: built().encoder(s, padding_mask=m),
                         [x(1, 3, 8), np.ones((1, 5), bool)])),
    Case("TransformerEncoder.call-padding_mask-values",
         lambda: built().encoder(x(1, 3, 8),
                                 padding_mask=np.array([[0.0, -1e9, 0.0]])),
         ValueError, "`padding_mask`", "-1000000000.0"),
    Case("TransformerEncoder.call-attention_mask-shape",
         lambda: built().encoder(x(1, 3, 8),
                                 attention_mask=np.ones((1, 3, 5), bool)),
         ValueError, "`attention_mask`", "attention_mask.shape=(1, 3, 5)",
         traced=lambda: (lambda s, m: built().encoder(s, attention_mask=m),
                         [x(1, 3, 8), np.ones((1, 3, 5), bool)])),
    # keras_attn.layers.TransformerDecoder
    Case("TransformerDecoder-dropout",
         lambda: layers.TransformerDecoder(8, 2, dropout=2), ValueError,
         "`dropout`", "dropout=2"),
    Case("TransformerDecoder.call-no-encoder_sequence",
         lambda: built().decoder(x(1, 3, 8)), ValueError,
         "encoder_sequence", "encoder_sequence=None"),
    Case("TransformerDecoder.call-decoder-width",
         lambda: built().decoder(x(1, 3, 6), x(1, 3, 8)), ValueError,
         "`decoder_sequence`", "decoder_sequence.shape=(1, 3, 6)",
         traced=lambda: (built().decoder, [x(1, 3, 6), x(1, 3, 8)])),
    Case("TransformerDecoder.call-encoder-width",
         lambda: built().decoder(x(1, 3, 8), x(1, 3, 6)), ValueError,
         "`encoder_sequence`", "encoder_sequence.shape=(1, 3, 6)",
         traced=lambda: (built().decoder, [x(1, 3, 8), x(1, 3, 6)])),
    Case("TransformerDecoder.call-decoder_padding_mask-shape",
         lambda: built().decoder(x(1, 3, 8), x(1, 3, 8),
                                 decoder_padding_mask=np.ones((1, 4), bool)),
         ValueError, "`decoder_padding_mask`",
         "decoder_padding_mask.shape=(1, 4)",
         traced=lambda: (
             lambda d, e, m: built().decoder(d, e, decoder_padding_mask=m),
             [x(1, 3, 8), x(1, 3, 8), np.ones((1, 4), bool)])),
    Case("TransformerDecoder.call-encoder_padding_mask-shape",
         lambda: built().decoder(x(1, 3, 8), x(1, 3, 8),
                                 encoder_padding_mask=np.ones((1, 4), bool)),
         ValueError, "`encoder_padding_mask`",
         "encoder_padding_mask.shape=(1, 4)"),
    Case("TransformerDecoder.call-decoder_attention_mask-shape",
         lambda: built().decoder(
             x(1, 3, 8), x(1, 3, 8),
             decoder_attention_mask=np.ones((1, 3, 4), bool)),
         ValueError, "`decoder_attention_mask`",
         "decoder_attention_mask.shape=(1, 3, 4)"),
    Case("TransformerDecoder.call-encoder_attention_mask-values",
         lambda: built().decoder(x(1, 3, 8), x(1, 3, 8),
                                 encoder_attention_mask=ADDITIVE),
         ValueError, "`encoder_attention_mask`", "-1000000000.0"),
    # keras_attn.layers.TokenAndPositionEmbedding
    Case("TokenAndPositionEmbedding-vocabulary_size",
         lambda: layers.TokenAndPositionEmbedding(0, 4, 8), ValueError,
         "`vocabulary_size`", "vocabulary_size=0"),
    Case("TokenAndPositionEmbedding-embedding_dim",
         lambda: layers.TokenAndPositionEmbedding(10, 4, 1.5), ValueError,
         "`embedding_dim`", "embedding_dim=1.5"),
    Case("TokenAndPositionEmbedding-position",
         lambda: layers.TokenAndPositionEmbedding(10, 4, 8, position="rope"),
         ValueError, "`position`", "position='rope'"),
    Case("TokenAndPositionEmbedding.call-float-ids",
         lambda: built().embedding(x(1, 3)), TypeError, "`inputs`",
         "float32",
         traced=lambda: (built().embedding, [x(1, 3)])),
    Case("TokenAndPositionEmbedding.call-negative-id",
         lambda: built().embedding(ids([1, -1])), ValueError, "`inputs`",
         "e.g. -1"),
    Case("TokenAndPositionEmbedding.call-id-past-vocabulary",
         lambda: built().embedding(ids([1, 10])), ValueError, "`inputs`",
         "e.g. 10"),
    Case("TokenAndPositionEmbedding.call-too-long",
         lambda: built().embedding(ids([1, 2, 3, 4, 5])), ValueError,
         "`sequence_length`", "shape=(1, 5, 8)",
         traced=lambda: (built().embedding, [ids([1, 2, 3, 4, 5])])),
    Case("TokenAndPositionEmbedding.call-reverse-width",
         lambda: built().embedding(x(1, 3, 6), reverse=True), ValueError,
         "`inputs`", "inputs.shape=(1, 3, 6)",
         traced=lambda: (lambda h: built().embedding(h, reverse=True),
                         [x(1, 3, 6)])),
    # keras_attn.layers.PositionEmbedding
    Case("PositionEmbedding-sequence_length",
         lambda: layers.PositionEmbedding(0), ValueError,
         "`sequence_length`", "sequence_length=0"),
    Case("PositionEmbedding.call-width",
         lambda: built().positions(x(1, 3, 6)), ValueError, "`inputs`",
         "inputs.shape=(1, 3, 6)",
         traced=lambda: (built().positions, [x(1, 3, 6)])),
    Case("PositionEmbedding.call-past-the-table",
         lambda: built().positions(x(1, 3, 8), start_index=2), ValueError,
         "`start_index`", "start_index=2"),
    Case("PositionEmbedding.call-negative-start",
         lambda: built().positions(x(1, 3, 8), start_index=-1), ValueError,
         "`start_index`", "start_index=-1"),
    Case("PositionEmbedding.call-positions-range",
         lambda: built().positions(x(1, 3, 8), positions=np.array([0, 1, 4])),
         ValueError, "`positions`", "positions=[0, 1, 4]"),
    Case("PositionEmbedding.call-positions-rank",
         lambda: built().positions(x(1, 3, 8),
                                   positions=np.zeros((1, 1, 3), "int32")),
         ValueError, "`positions`", "positions.shape=(1, 1, 3)",
         traced=lambda: (lambda s, p: built().positions(s, positions=p),
                         [x(1, 3, 8), np.zeros((1, 1, 3), "int32")])),
    Case("PositionEmbedding.call-positions-float",
         lambda: built().positions(x(1, 3, 8),
                                   positions=np.zeros(3, "float32")),
         TypeError, "`positions`", "float32"),
    # keras_attn.layers.SinusoidalPositionEncoding
    Case("SinusoidalPositionEncoding-max_wavelength",
         lambda: layers.SinusoidalPositionEncoding(max_wavelength=0),
         ValueError, "`max_wavelength`", "max_wavelength=0"),
    Case("SinusoidalPositionEncoding.call-rank-1",
         lambda: layers.SinusoidalPositionEncoding()(x(4)), ValueError,
         "`inputs`", "inputs.shape=(4,)",
         traced=lambda: (layers.SinusoidalPositionEncoding(), [x(4)])),
    Case("SinusoidalPositionEncoding.call-positions-length",
         lambda: layers.SinusoidalPositionEncoding()(
             x(1, 3, 8), positions=np.arange(5)),
         ValueError, "`positions`", "positions.shape=(5,)"),
    # keras_attn.layers.RotaryEmbedding
    Case("RotaryEmbedding-rope_type",
         lambda: layers.RotaryEmbedding(rope_type="ntk"), ValueError,
         "`rope_type`", "rope_type='ntk'"),
    Case("RotaryEmbedding-scaling_factor",
         lambda: layers.RotaryEmbedding(scaling_factor=0), ValueError,
         "`scaling_factor`", "scaling_factor=0"),
    Case("RotaryEmbedding.call-rank-2",
         lambda: layers.RotaryEmbedding()(x(3, 4)), ValueError,
         "`inputs`", "inputs.shape=(3, 4)",
         traced=lambda: (layers.RotaryEmbedding(), [x(3, 4)])),
    Case("RotaryEmbedding.call-odd-features",
         lambda: layers.RotaryEmbedding()(x(1, 3, 5)), ValueError,
         "`inputs`", "inputs.shape=(1, 3, 5)",
         traced=lambda: (layers.RotaryEmbedding(), [x(1, 3, 5)])),
    Case("RotaryEmbedding.call-same-axes",
         lambda: layers.RotaryEmbedding(sequence_axis=2,
                                        feature_axis=-1)(x(1, 3, 4)),
         ValueError, "`sequence_axis`", "feature_axis=-1"),
    # keras_attn.models builders
    Case("encoder_classifier-vocabulary_size",
         lambda: models.encoder_classifier(0, 4), ValueError,
         "`vocabulary_size`", "vocabulary_size=0"),
    Case("encoder_classifier-num_classes",
         lambda: models.encoder_classifier(10, 4, num_classes=0), ValueError,
         "`num_classes`", "num_classes=0"),
    Case("encoder_classifier-hidden_dim",
         lambda: models.encoder_classifier(10, 4, hidden_dim=10,
                                           num_heads=4),
         ValueError, "`hidden_dim`", "hidden_dim=10"),
    Case("decoder_lm-position", lambda: models.decoder_lm(10, 4,
                                                          position="abs"),
         ValueError, "`position`", "position='abs'"),
    Case("decoder_lm-num_layers-float",
         lambda: models.decoder_lm(10, 4, num_layers=2.0), ValueError,
         "`num_layers`", "num_layers=2.0"),
    Case("decoder_lm-dropout", lambda: models.decoder_lm(10, 4, dropout=1),
         ValueError, "`dropout`", "dropout=1"),
    Case("decoder_lm-num_key_value_heads",
         lambda: models.decoder_lm(10, 4, hidden_dim=8, num_heads=4,
                                   num_key_value_heads=3),
         ValueError, "`num_key_value_heads`", "num_key_value_heads=3"),
    Case("seq2seq-source_length",
         lambda: models.seq2seq(10, 10, source_length=0, target_length=4),
         ValueError, "`source_length`", "source_length=0"),
    Case("seq2seq-target_vocabulary_size",
         lambda: models.seq2seq(10, -1, source_length=4, target_length=4),
         ValueError, "`target_vocabulary_size`",
         "target_vocabulary_size=-1"),
    # keras_attn.models.generate
    Case("generate-prompt-float", lambda: _generate(prompt=[[1.5, 2.0]]),
         TypeError, "`prompt_ids`", "[[1.5, 2.0]]"),
    Case("generate-prompt-negative", lambda: _generate(prompt=[[1, -2]]),
         ValueError, "`prompt_ids`", "e.g. -2"),
    Case("generate-prompt-past-vocabulary",
         lambda: _generate(prompt=[[1, 20]]), ValueError, "`prompt_ids`",
         "e.g. 20"),
    Case("generate-prompt-rank",
         lambda: models.generate(model("lm"), np.ones((1, 2, 2), int), 2),
         ValueError, "`prompt_ids`", "prompt_ids.shape=(1, 2, 2)"),
    Case("generate-prompt-left-padded", lambda: _generate(prompt=[[0, 3]]),
         ValueError, "`prompt_ids`", "prompt_ids=[[0, 3]]"),
    Case("generate-max_new_tokens", lambda: _generate(new=0), ValueError,
         "`max_new_tokens`", "max_new_tokens=0"),
    Case("generate-past-the-positions", lambda: _generate(new=7),
         ValueError, "max_new_tokens (7)", "sequence_length=8"),
    Case("generate-stop_token_id-past-vocabulary",
         lambda: _generate(stop_token_id=99), ValueError,
         "`stop_token_id`", "stop_token_id=99"),
    Case("generate-stop_token_id-negative",
         lambda: _generate(stop_token_id=-1), ValueError,
         "`stop_token_id`", "stop_token_id=-1"),
    Case("generate-stop_token_id-padding",
         lambda: _generate(stop_token_id=0), ValueError, "`stop_token_id`",
         "stop_token_id=0"),
    Case("generate-stop_token_id-float",
         lambda: _generate(stop_token_id=2.5), TypeError, "`stop_token_id`",
         "stop_token_id=2.5"),
    Case("generate-temperature", lambda: _generate(temperature=-1),
         ValueError, "`temperature`", "temperature=-1"),
    Case("generate-top_k", lambda: _generate(sampler="top_k", top_k=0),
         ValueError, "`top_k`", "top_k=0"),
    Case("generate-top_p", lambda: _generate(sampler="top_p", top_p=1.5),
         ValueError, "`top_p`", "top_p=1.5"),
    Case("generate-sampler", lambda: _generate(sampler="beam"), ValueError,
         "`sampler`", "sampler='beam'"),
    Case("generate-seq2seq-no-source", lambda: _generate("seq2seq"),
         ValueError, "`encoder_token_ids`", "seq2seq"),
    Case("generate-source-for-lm",
         lambda: _generate(encoder_token_ids=[[1, 2]]), ValueError,
         "`encoder_token_ids`", "decoder-only"),
    Case("generate-source-too-long",
         lambda: _generate("seq2seq", encoder_token_ids=np.ones((1, 9), int)),
         ValueError, "`encoder_token_ids`",
         "encoder_token_ids.shape=(1, 9)"),
    Case("generate-source-batch",
         lambda: _generate("seq2seq", encoder_token_ids=np.ones((2, 3), int)),
         ValueError, "`encoder_token_ids`", "Received: 2 and 1"),
    Case("generate-not-a-generator-model",
         lambda: models.generate(model("classifier"), [[1]], 2), ValueError,
         "`model`", "model='encoder_classifier'"),
    Case("generate-not-a-model", lambda: models.generate("lm", [[1]], 2),
         TypeError, "`model`", "model=str"),
    # keras_attn.data
    Case("classification_dataset-negative-label",
         lambda: data.classification_dataset(["w1", "w2"], [0, -1],
                                             tokenizer(), 4, 2),
         ValueError, "`labels`", "labels=[0, -1]"),
    Case("classification_dataset-labels-rank",
         lambda: data.classification_dataset(["w1"], [[1]], tokenizer(), 4, 2),
         ValueError, "`labels`", "shape (1, 1)"),
    Case("classification_dataset-labels-count",
         lambda: data.classification_dataset(["w1", "w2"], [1], tokenizer(),
                                             4, 2),
         ValueError, "one label per text", "1 labels"),
    Case("classification_dataset-texts-str",
         lambda: data.classification_dataset("w1", [1], tokenizer(), 4, 2),
         TypeError, "`texts`", "texts='w1'"),
    Case("classification_dataset-batch_size",
         lambda: data.classification_dataset(["w1"], [1], tokenizer(), 4, 0),
         ValueError, "`batch_size`", "batch_size=0"),
    Case("lm_dataset-sequence_length",
         lambda: data.lm_dataset(["w1 w2"], tokenizer(), -1, 2), ValueError,
         "`sequence_length`", "sequence_length=-1"),
    Case("lm_dataset-texts-int",
         lambda: data.lm_dataset([1, 2], tokenizer(), 4, 2), TypeError,
         "`texts`", "texts[0]=1"),
    Case("translation_dataset-pairs",
         lambda: data.translation_dataset([("w1",)], tokenizer(), tokenizer(),
                                          4, 4, 2),
         TypeError, "`pairs`", "pairs[0]=('w1',)"),
    Case("read_sentiment_csv-missing",
         lambda: data.read_sentiment_csv(files().missing), FileNotFoundError,
         "path=", "missing.keras"),
    Case("read_sentiment_csv-path-type",
         lambda: data.read_sentiment_csv(3), TypeError, "`path`", "path=3"),
    Case("read_sentiment_csv-encoding_errors",
         lambda: data.read_sentiment_csv(encoding_errors="nope"), ValueError,
         "`encoding_errors`", "encoding_errors='nope'"),
    Case("read_translation_pairs-max_pairs",
         lambda: data.read_translation_pairs(max_pairs=-1), ValueError,
         "`max_pairs`", "max_pairs=-1"),
    Case("train_val_test_split-fractions",
         lambda: data.train_val_test_split([1, 2, 3],
                                           fractions=(0.5, 0.6, 0.1)),
         ValueError, "`fractions`", "fractions=(0.5, 0.6, 0.1)"),
    Case("train_vocabulary-vocabulary_size",
         lambda: data.train_vocabulary(["w1 w2"], 3), ValueError,
         "`vocabulary_size`", "vocabulary_size=3"),
    Case("make_tokenizer-sequence_length",
         lambda: data.make_tokenizer(VOCABULARY, 0), ValueError,
         "`sequence_length`", "sequence_length=0"),
    Case("save_class_names-line-break",
         lambda: data.save_class_names(["a\nb"], os.path.join(
             files().folder, "classes.txt")),
         ValueError, "`class_names`", "'a\\nb'"),
    Case("load_vocabulary-missing",
         lambda: load_vocabulary(files().missing), FileNotFoundError,
         "path=", "missing.keras"),
    Case("load_vocabulary-not-utf8",
         lambda: load_vocabulary(files().binary_vocabulary), ValueError,
         "binary.txt", "not UTF-8"),
    Case("load_vocabulary-truncated",
         lambda: load_vocabulary(files().cut_vocabulary), ValueError,
         "cut.txt", "'[UNK]'"),
    # keras_attn.export
    Case("export_tflite-quantization",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"), quantization="int3"),
         ValueError, "`quantization`", "quantization='int3'"),
    Case("export_tflite-sample_inputs-range",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"),
             sample_inputs=ids([1, 2, 50, 0, 0, 0])),
         ValueError, "`sample_inputs['token_ids']`", "e.g. 50"),
    Case("export_tflite-sample_inputs-float",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"), sample_inputs=x(1, 6)),
         TypeError, "`sample_inputs['token_ids']`", "float32"),
    Case("export_tflite-sample_inputs-shape",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"), sample_inputs=np.ones((1, 9), int)),
         ValueError, "`sample_inputs['token_ids']`", "shape=(1, 9)"),
    Case("export_tflite-int8-without-data",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"), quantization="int8"),
         ValueError, "`representative_data`", "representative_data=None"),
    Case("export_tflite-class_names",
         lambda: export.export_tflite(model("classifier"), os.path.join(
             files().folder, "m.tflite"), class_names=["a", "b", "c"]),
         ValueError, "`class_names`", "3 entries"),
    Case("export_tflite-not-a-model",
         lambda: export.export_tflite("m", os.path.join(files().folder,
                                                        "m.tflite")),
         TypeError, "`model`", "model=str"),
    Case("export_generator_tflite-classifier",
         lambda: export.export_generator_tflite(model("classifier"),
                                                os.path.join(files().folder,
                                                             "g.tflite")),
         ValueError, "`model`", "model='encoder_classifier'"),
    Case("export_generator_tflite-max_length",
         lambda: export.export_generator_tflite(model("lm"), os.path.join(
             files().folder, "g.tflite"), max_length=100),
         ValueError, "`max_length`=100", "sequence_length=8"),
    Case("export_generator_tflite-kv_cache",
         lambda: export.export_generator_tflite(model("lm"), os.path.join(
             files().folder, "g.tflite"), kv_cache="disk"),
         ValueError, "`kv_cache`", "kv_cache='disk'"),
    Case("export_generator_tflite-sample_prompts-range",
         lambda: export.export_generator_tflite(model("lm"), os.path.join(
             files().folder, "g.tflite"), sample_prompts=[[5, 20]]),
         ValueError, "`sample_prompts`", "e.g. 20"),
    Case("export_saved_model-max_length",
         lambda: export.export_saved_model(model("lm"), os.path.join(
             files().folder, "sm"), max_length=0),
         ValueError, "`max_length`", "max_length=0"),
    # keras_attn_runtime (the device runner)
    Case("TFLiteFile-truncated",
         lambda: TFLiteFile(files().truncated_tflite), ValueError,
         "truncated.tflite", "truncated or corrupt", tflite=True),
    Case("TFLiteFile-missing", lambda: TFLiteFile(files().missing),
         FileNotFoundError, "model_path=", "missing.keras"),
    Case("Classifier-truncated",
         lambda: Classifier(files().truncated_tflite), ValueError,
         "truncated.tflite", "model_path=", tflite=True),
    Case("Classifier.predict_ids-range",
         lambda: Classifier(files().classifier).predict_ids(
             ids([1, 2, 40, 0, 0, 0])),
         ValueError, "`token_ids`", "e.g. 40", tflite=True),
    Case("Classifier.predict-texts", lambda: Classifier(
        files().classifier).predict(5), TypeError, "`texts`", "texts=5",
         tflite=True),
    Case("Generator-classifier-file",
         lambda: Generator(files().classifier), ValueError,
         "classifier.tflite", "prefill", tflite=True),
    Case("Generator.generate-max_new_tokens",
         lambda: Generator(files().lm).generate([2, 4], 0), ValueError,
         "`max_new_tokens`", "max_new_tokens=0", tflite=True),
    Case("Generator.generate-stop_token_id",
         lambda: Generator(files().lm).generate([2, 4], 2,
                                                stop_token_id=99),
         ValueError, "`stop_token_id`", "stop_token_id=99", tflite=True),
    Case("WordPieceTokenizer-no-padding-first",
         lambda: WordPieceTokenizer(["w1", "[PAD]", "[UNK]"]), ValueError,
         "`vocabulary`", "'w1'"),
    Case("make_sampler-top_p", lambda: make_sampler("top_p", top_p=0),
         ValueError, "`top_p`", "top_p=0"),
    # keras_attn.visualize
    Case("attention_weights-layer",
         lambda: visualize.attention_weights(model("classifier"), "nope",
                                             ids([1] * 6)),
         ValueError, "No layer named 'nope'", "layer='nope'"),
    Case("attention_weights-not-attention",
         lambda: visualize.attention_weights(model("classifier"), "pooling",
                                             ids([1] * 6)),
         TypeError, "`layer`", "layer='pooling'"),
    Case("attention_weights-model",
         lambda: visualize.attention_weights("m", "x", ids([1])), TypeError,
         "`model`", "model='m'"),
    Case("attention_weights-ids-range",
         lambda: visualize.attention_weights(model("classifier"),
                                             "encoder_layer_0",
                                             ids([1, 2, 3, 99, 0, 0])),
         ValueError, "`inputs`", "e.g. 99"),
    Case("plot_attention-weights-rank",
         lambda: visualize.plot_attention(np.ones(3), ["a", "b", "c"]),
         ValueError, "`weights`", "weights.shape=(3,)"),
    Case("plot_attention-tokens",
         lambda: visualize.plot_attention(x(2, 3, 3), ["a", "b"]),
         ValueError, "`x_tokens`", "len(x_tokens)=2"),
    Case("plot_attention-heads",
         lambda: visualize.plot_attention(x(2, 3, 3), ["a", "b", "c"],
                                          heads=[5]),
         ValueError, "`heads`", "heads=[5]"),
    Case("plot_attention-path",
         lambda: visualize.plot_attention(x(2, 3, 3), ["a", "b", "c"],
                                          path="weights.jpg"),
         ValueError, "`path`", "path='weights.jpg'"),
    # keras_attn.training
    Case("TrainingRun-epochs",
         lambda: training.TrainingRun(files().folder, {}, 0), ValueError,
         "`epochs`", "epochs=0"),
    Case("TrainingRun-config",
         lambda: training.TrainingRun(files().folder, [1], 1), TypeError,
         "`config`", "list"),
    Case("BestModelCheckpoint-path",
         lambda: training.BestModelCheckpoint("best.h5"), ValueError,
         "`path`", "path='best.h5'"),
    Case("ProgressLogger-interval", lambda: training.ProgressLogger(-1),
         ValueError, "`interval`", "interval=-1"),
]


def _path(attribute):
    """A command-line argument resolved when the case runs."""
    return lambda: getattr(files(), attribute)


CLI_CASES = [
    Cli("cli-export-missing-model", ["export", _path("missing"), "o.tflite"],
        "no such model file", "missing.keras"),
    Cli("cli-export-truncated-keras",
        ["export", _path("truncated_keras"), "o.tflite"],
        "truncated.keras", "not a zip archive"),
    Cli("cli-export-bad-crc-keras", ["export", _path("bad_crc_keras"),
                                     "o.tflite"],
        "bad_crc.keras", "BadZipFile"),
    Cli("cli-export-output-under-a-file",
        ["export", _path("keras"), lambda: files().keras + "/o.tflite"],
        "cannot write", "classifier.keras/o.tflite"),
    Cli("cli-export-unwritable-output",
        ["export", _path("keras"), "/proc/keras_attn/o.tflite"],
        "cannot write /proc/keras_attn/o.tflite", "/proc"),
    Cli("cli-export-int8-without-data",
        ["export", _path("keras"), "o.tflite", "--quantize", "int8"],
        "--quantize int8", "--data"),
    Cli("cli-export-saved-model-quantize",
        ["export", _path("keras"), "sm", "--format", "saved_model",
         "--quantize", "float16"],
        "--quantize", "TFLite formats only"),
    Cli("cli-export-format", ["export", _path("keras"), "o", "--format",
                              "onnx"],
        "--format", "'onnx'"),
    Cli("cli-export-missing-vocabulary",
        ["export", _path("keras"), "o.tflite", "--vocabulary",
         _path("missing")],
        "--vocabulary", "missing.keras"),
    Cli("cli-quickstart-epochs", ["quickstart", "--epochs", "0"],
        "--epochs", "'0'"),
    Cli("cli-quickstart-hidden-dim", ["quickstart", "--hidden-dim", "x"],
        "--hidden-dim", "'x'"),
    Cli("cli-generate-missing-model", ["generate", _path("missing")],
        "model_path=", "missing.keras"),
    Cli("cli-generate-truncated-tflite",
        ["generate", _path("truncated_tflite")], "truncated.tflite",
        "truncated or corrupt", tflite=True),
    Cli("cli-generate-max-new-tokens",
        ["generate", _path("lm"), "--prompt", "w1", "--max-new-tokens", "0"],
        "`max_new_tokens`", "max_new_tokens=0", tflite=True),
    Cli("cli-generate-temperature",
        ["generate", _path("lm"), "--prompt", "w1", "--temperature", "-1"],
        "`temperature`", "temperature=-1", tflite=True),
    Cli("cli-generate-classifier-file",
        ["generate", _path("classifier"), "--prompt", "w1"],
        "classifier.tflite", "prefill", tflite=True),
    Cli("cli-classify-missing-vocabulary",
        ["classify", _path("classifier"), "w1", "--vocabulary",
         _path("missing")],
        "vocabulary", "missing.keras", tflite=True),
]


def _message(error):
    return " ".join(str(error).split())


def _skip_without_tflite(case):
    if case.tflite and not ON_TENSORFLOW:
        pytest.skip("exporting .tflite files needs the TensorFlow backend")


def test_the_table_covers_every_entry_point():
    """>= 80 distinct cases over the op, every layer's constructor and
    call, the builders, generate, data, export, the runtime, visualize,
    training and the command line, each naming two things (the argument
    and the value received)."""
    everything = CASES + CLI_CASES
    assert len({case.id for case in everything}) == len(everything) >= 80
    assert all(len(case.names) >= 2 for case in everything)
    covered = {case.id.split("-")[0].split(".")[0] for case in everything}
    # keras-hub's names (aliases) are the same classes.
    public_layers = {getattr(layers, name).__name__
                     for name in layers.__all__}
    assert public_layers <= covered, public_layers - covered
    for entry in ("op", "encoder_classifier", "decoder_lm", "seq2seq",
                  "generate", "classification_dataset", "lm_dataset",
                  "translation_dataset", "export_tflite",
                  "export_generator_tflite", "export_saved_model",
                  "TFLiteFile", "Classifier", "Generator",
                  "attention_weights", "plot_attention", "TrainingRun",
                  "cli"):
        assert entry in covered, entry
    assert any(case.traced for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_names_the_argument_and_value(case):
    _skip_without_tflite(case)
    with pytest.raises(case.error) as info:
        case.call()
    message = _message(info.value)
    for name in case.names:
        assert name in message, (name, message)
    # Ours, not the backend's: no op names or framework traces.
    for trace in ("{{function_node", "[Op:", "Traceback"):
        assert trace not in message, message


TRACED = [case for case in CASES if case.traced]


def jit(fn):
    """`fn` compiled with XLA by the backend, as `fit(jit_compile=True)`
    or `jax.jit` would."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    pytest.skip(f"no compiled function on the {backend} backend")


@pytest.mark.parametrize("case", TRACED, ids=[case.id for case in TRACED])
def test_the_same_error_under_jit_compile(case):
    fn, args = case.traced()
    with pytest.raises(case.error) as info:
        jit(fn)(*args)
    message = _message(info.value)
    for name in case.names:
        assert name in message, (name, message)


def _nan_cases():
    """Calls with a mask of values other than 0 and 1, given as an
    argument of the compiled function (so its values are unknown when
    it is traced)."""
    q = x(1, 3, 2, 4)
    x8 = x(1, 3, 8)
    return {
        "op-mask": (lambda m: _op(q=q, mask=m), ADDITIVE),
        "MultiHeadAttention-attention_mask": (
            lambda m: built().mha(x8, x8, attention_mask=m), ADDITIVE),
        "TransformerEncoder-padding_mask": (
            lambda m: built().encoder(x8, padding_mask=m),
            np.array([[0.0, -1e9, 0.0]], "float32")),
        "TransformerDecoder-encoder_attention_mask": (
            lambda m: built().decoder(x8, x8, encoder_attention_mask=m),
            ADDITIVE),
    }


@pytest.mark.parametrize("name", sorted(_nan_cases()))
def test_a_traced_invalid_mask_gives_nan(name):
    """Where values cannot raise, a mask that is neither boolean nor 0/1
    gives NaN outputs, never attention read through an inverted mask;
    the same mask as 0/1 floats gives the boolean mask's outputs."""
    fn, bad = _nan_cases()[name]
    compiled = jit(fn)
    assert np.isnan(keras.ops.convert_to_numpy(compiled(bad))).all()
    as_bool = bad == 0
    expected = keras.ops.convert_to_numpy(fn(as_bool))
    got = keras.ops.convert_to_numpy(compiled(as_bool.astype("float32")))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def _run_cli(argv, capsys):
    argv = [arg() if callable(arg) else arg for arg in argv]
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # argparse
        status = exit.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_error_is_one_line_with_status_2(case, capsys, tmp_path,
                                             monkeypatch):
    _skip_without_tflite(case)
    files()  # made before changing folder
    monkeypatch.chdir(tmp_path)
    status, captured = _run_cli(case.argv, capsys)
    assert status == 2, captured
    command = case.argv[0]
    lines = [line for line in captured.err.splitlines()
             if ": notice: " not in line]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"keras-attn {command}: error: "), lines
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in captured.err + captured.out
    assert os.listdir(tmp_path) == []  # nothing half-written
