"""The description a keras_attn .tflite file carries about itself.

`keras_attn.export.metadata.embed` writes it into the flatbuffer's
`Model.metadata` list, as one entry named `"keras_attn"` whose buffer
holds UTF-8 JSON; `TFLiteFile` reads it back. With it, a model file is
all the runtime needs: the vocabulary, the special tokens, the class
names, the lengths and the generation defaults travel inside.

The JSON object (format `"keras_attn/1"`; keys absent when not
applicable):

| key | value |
|---|---|
| `format` | `"keras_attn/1"` |
| `keras_attn_version` | str |
| `kind` | `"classifier"` or `"generator"` (a prefill/decode file) |
| `model_type` | `encoder_classifier`, `decoder_lm`, `seq2seq` or `other` |
| `vocabulary` | list of str, the (target) vocabulary in id order |
| `source_vocabulary` | list of str (seq2seq) |
| `lowercase` | bool, the tokenizer's normalization |
| `special_tokens` | `{"pad": ..., "unk": ..., "bos": ..., "eos": ...}` |
| `class_names` | list of str (classifier) |
| `sequence_length` | int, the classifier's input length |
| `max_length` | int, the generator's cache length |
| `source_length` | int, the seq2seq encoder length |
| `kv_cache` | `"variables"` or `"tensors"` (generator) |
| `quantization` | `null`, `"float16"`, `"dynamic_int8"`, `"int8"` or `"int4"` |
| `generation` | generation defaults (`keras_attn_runtime.samplers`) |

Unknown keys are kept and ignored, so that a newer writer of format 1
stays readable.
"""

from keras_attn_runtime import checks
from keras_attn_runtime import samplers
from keras_attn_runtime import vocabulary as vocabulary_lib

METADATA_NAME = "keras_attn"
FORMAT = "keras_attn/1"
KINDS = ("classifier", "generator")
MODEL_TYPES = ("encoder_classifier", "decoder_lm", "seq2seq", "other")
KV_CACHES = ("variables", "tensors")
QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8", "int4")
SPECIAL_TOKENS = ("pad", "unk", "bos", "eos")


def check_description(description):
    """Returns a checked copy of a description dict.

    Raises:
        TypeError: if it is not a dict, or a value has the wrong type.
        ValueError: for a missing or unknown format or kind, a bad value,
            or special tokens or class names that do not fit.
    """
    if not isinstance(description, dict):
        raise TypeError(
            "Expected the description to be a dict. Received: "
            f"{checks.short(description)}"
        )
    description = dict(description)
    fmt = description.get("format")
    if fmt != FORMAT:
        newer = isinstance(fmt, str) and fmt.startswith("keras_attn/")
        raise ValueError(
            f"Unsupported description format {fmt!r}; this runtime reads "
            f"{FORMAT!r}" + (" (the file is from a newer keras_attn: "
                             "upgrade keras_attn)" if newer else "") + "."
        )
    checks.one_of(description.get("kind"), "kind", KINDS)
    checks.one_of(description.get("model_type", "other"), "model_type",
                  MODEL_TYPES)
    for key, what in (("vocabulary", "the embedded vocabulary"),
                      ("source_vocabulary",
                       "the embedded source vocabulary")):
        if key in description:
            description[key] = vocabulary_lib.check_vocabulary(
                description[key], what)
    if "lowercase" in description:
        checks.boolean(description["lowercase"], "lowercase")
    for key in ("sequence_length", "max_length", "source_length"):
        if key in description:
            checks.positive_int(description[key], key)
    if "kv_cache" in description:
        checks.one_of(description["kv_cache"], "kv_cache", KV_CACHES)
    if "quantization" in description:
        checks.one_of(description["quantization"], "quantization",
                      QUANTIZATIONS)
    if "keras_attn_version" in description and not isinstance(
        description["keras_attn_version"], str
    ):
        raise checks.invalid("keras_attn_version", "a str",
                             description["keras_attn_version"])
    if "class_names" in description:
        names = checks.text_list(description["class_names"], "class_names")
        if len(set(names)) != len(names) or not all(names):
            raise checks.invalid("class_names",
                                 "distinct non-empty names", names)
        description["class_names"] = names
    if "special_tokens" in description:
        description["special_tokens"] = _check_special_tokens(
            description["special_tokens"], description.get("vocabulary"))
    if "generation" in description:
        description["generation"] = samplers.check_generation_config(
            description["generation"])
        vocabulary = description.get("vocabulary")
        for key in ("start_token", "stop_token"):
            token = description["generation"].get(key)
            if token is not None and vocabulary is not None and (
                token not in vocabulary
            ):
                raise ValueError(
                    f"The generation {key} {token!r} is not in the "
                    "vocabulary."
                )
    return description


def _check_special_tokens(tokens, vocabulary):
    if not isinstance(tokens, dict) or not all(
        key in SPECIAL_TOKENS and isinstance(value, str) and value
        for key, value in tokens.items()
    ):
        raise checks.invalid(
            "special_tokens",
            f"a dict from some of {SPECIAL_TOKENS} to tokens", tokens)
    if vocabulary is not None:
        missing = [t for t in tokens.values() if t not in vocabulary]
        if missing:
            raise ValueError(
                f"The special tokens {missing} are not in the vocabulary. "
                f"Received: special_tokens={tokens!r}"
            )
    return dict(tokens)
