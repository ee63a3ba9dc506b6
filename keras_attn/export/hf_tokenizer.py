"""A Hugging Face `tokenizer.json` that gives the ids of our tokenizer.

LiteRT-LM bundles carry their tokenizer as an HF `tokenizer.json` (or a
SentencePiece model); `tokenizer_json(vocabulary)` writes one whose ids
equal those of `keras_attn.data.make_tokenizer(vocabulary)` (keras-hub's
`WordPieceTokenizer` on tensorflow-text) on every tweet and every
translation sentence of our corpora (tests/export/hf_tokenizer_test.py).

What keras-hub does to a text (lowercase=True, split_on_cjk=True, accents
kept), and the HF pieces that do the same:

1. Split: ASCII whitespace, control (`Cc`) and format (`Cf`) characters
   are dropped; punctuation (ASCII symbols and `\\p{P}`) and CJK ideographs
   become one-character words. RE2's `\\s` is ASCII only, so a no-break
   space does not split. -> two `Split` pre-tokenizers.
2. Case fold each word: ICU NFKC_Casefold (`tf_text.case_fold_utf8`).
   HF normalizes the whole text BEFORE splitting, with `NFKC` and
   `Lowercase`, which differ from NFKC_Casefold on about 4,500 code points
   (default-ignorables that the fold deletes, "ß" -> "ss", final sigma,
   Cherokee, ...): `Replace` rules after `Lowercase` patch them (about 290
   rules, one per replacement string). A character whose fold holds a
   space (a no-break space, "¨" -> " ̈") stays inside its word in
   keras-hub; here it is replaced, before NFKC, by its fold with the
   space written as U+F8FF (private use), which does not split; the
   vocabulary's tokens carry the same stand-in.
3. WordPiece: longest match first, `##` suffixes, a word that cannot be
   covered becomes `[UNK]`. -> `models.WordPiece`.

The patch is computed when a tokenizer is built (about 1 s, once per
process): the fold side from `tf_text.case_fold_utf8`, the very function
`make_tokenizer` runs, the HF side from the installed `tokenizers`. We
compute it rather than ship a table: a table generated once would go
stale silently when tensorflow-text (its ICU) or `tokenizers` change,
while this one always describes the tokenizer that made the training
data in the exporting environment, and there is no generated file to
review or regenerate.

What cannot match (no text of our corpora has it; a per-code-point sweep
lists them in `casefold_patch().residual`): characters whose fold holds
punctuation while they are not punctuation ("…" -> "..." is one word of
three pieces in keras-hub, three words here; "⑴", "℀"), since HF splits
after normalizing; and words longer than 100 UTF-8 bytes but at most 100
characters (keras-hub's limit is in bytes, HF's in characters).
"""

import dataclasses
import functools
import json
import unicodedata

from keras_attn_runtime import atomic
from keras_attn_runtime import vocabulary as vocabulary_lib
from keras_attn_runtime.tokenizer import _CJK_RANGES

# A no-break space and other folds to " " stay inside their word in
# keras-hub; HF splits on " ". This private-use character stands in.
SPACE_STAND_IN = "\uf8ff"
# keras-hub's FastWordpiece: 100 bytes; HF counts characters.
MAX_CHARS_PER_WORD = 100
_DROPPED = r"[\t\n\f\r ]|\p{Cc}|\p{Cf}"
_PUNCTUATION = r"[!-/:-@\[-`{-~]|\p{P}"


def _code(code_point):
    return "\\x{%X}" % code_point


def _char_class(code_points):
    """An Oniguruma character class of `code_points`, as ranges."""
    parts, codes = [], sorted(code_points)
    start = previous = codes[0]
    for code in codes[1:] + [None]:
        if code is not None and code == previous + 1:
            previous = code
            continue
        parts.append(_code(start) if start == previous
                     else f"{_code(start)}-{_code(previous)}")
        if code is not None:
            start = previous = code
    return "[" + "".join(parts) + "]"


def _is_dropped(char):
    """keras-hub drops it while splitting: it is never case folded."""
    return char in "\t\n\f\r " or unicodedata.category(char) in ("Cc", "Cf")


@dataclasses.dataclass(frozen=True)
class CasefoldPatch:
    """Where HF's `NFKC` + `Lowercase` differ from ICU NFKC_Casefold.

    Attributes:
        before: `{char: replacement}` applied before NFKC: characters whose
            fold holds a space (written as `SPACE_STAND_IN`).
        after: `{string: replacement}` applied after `Lowercase`: the
            NFKC + Lowercase form of a character -> its fold.
        residual: sorted code points whose normalized form still differs
            from their fold (see the module docstring).
    """

    before: dict
    after: dict
    residual: list


def _normalizer(patch):
    """The HF normalizer: `patch.before`, NFKC, Lowercase, `patch.after`."""
    from tokenizers import normalizers

    return normalizers.Sequence(
        _replace_rules(patch.before)
        + [normalizers.NFKC(), normalizers.Lowercase()]
        + _replace_rules(patch.after))


@functools.cache
def casefold_patch():
    """The `CasefoldPatch` of this environment, computed once.

    Every code point but the surrogates and the characters keras-hub drops
    is folded with `tf_text.case_fold_utf8` and normalized with HF's
    `NFKC` + `Lowercase`; where they differ, a rule maps one to the other.
    Then every character that differed or that a rule can touch goes
    through the finished HF normalizer, and those that still differ from
    their fold are the residual.
    """
    import tensorflow as tf
    import tensorflow_text as tf_text
    from tokenizers import normalizers

    chars = [chr(code) for code in range(0x110000)
             if not 0xD800 <= code <= 0xDFFF]
    chars = [char for char in chars if not _is_dropped(char)]
    folds = [fold.decode("utf-8") for fold in
             tf_text.case_fold_utf8(tf.constant(chars)).numpy()]
    plain = normalizers.Sequence([normalizers.NFKC(),
                                  normalizers.Lowercase()])
    normalized = [plain.normalize_str(char) for char in chars]
    before, after, conflicts = {}, {}, set()
    for char, fold, norm in zip(chars, folds, normalized):
        if " " in fold:
            before[char] = fold.replace(" ", SPACE_STAND_IN)
        elif norm != fold and after.setdefault(norm, fold) != fold:
            conflicts.add(norm)
    for key in conflicts:
        del after[key]
    # Longer keys first: a rule must not eat part of a longer one.
    after = dict(sorted(after.items(), key=lambda item: -len(item[0])))
    patch = CasefoldPatch(before, after, [])
    touched = set(before) | {char for key in after for char in key}
    normalizer = _normalizer(patch)
    residual = [
        ord(char) for char, fold, norm in zip(chars, folds, normalized)
        if (norm != fold or char in touched or not touched.isdisjoint(norm))
        and normalizer.normalize_str(char)
        != fold.replace(" ", SPACE_STAND_IN)
    ]
    return CasefoldPatch(before, after, residual)


def _replace_rules(mapping):
    """HF `Replace` normalizers for `{string: replacement}`: single
    characters grouped into one character class per replacement."""
    from tokenizers import Regex
    from tokenizers import normalizers

    by_target, rules = {}, []
    for key, target in mapping.items():
        if len(key) == 1:
            by_target.setdefault(target, []).append(ord(key))
        else:
            rules.append(normalizers.Replace(key, target))
    for target, codes in sorted(by_target.items()):
        rules.append(normalizers.Replace(Regex(_char_class(codes)), target))
    return rules


def build_tokenizer(vocabulary, lowercase=True):
    """A `tokenizers.Tokenizer` with the ids of `make_tokenizer`.

    Args:
        vocabulary: list of str. Starts with `[PAD]` and holds `[UNK]`
            (`keras_attn.data.train_vocabulary` makes such lists).
        lowercase: bool. As given to `make_tokenizer`. Defaults to `True`.

    Returns:
        A `tokenizers.Tokenizer` (no special tokens, no post-processor:
        ids are those of the text alone, as `make_tokenizer`'s).
    """
    from tokenizers import Regex
    from tokenizers import Tokenizer
    from tokenizers import decoders
    from tokenizers import models
    from tokenizers import pre_tokenizers

    vocabulary = vocabulary_lib.check_vocabulary(vocabulary)
    if not isinstance(lowercase, bool):
        raise TypeError(
            "Received an invalid value for argument `lowercase`, expected "
            f"a bool. Received: lowercase={lowercase!r}"
        )
    ids = {token.replace(" ", SPACE_STAND_IN): i
           for i, token in enumerate(vocabulary)}
    tokenizer = Tokenizer(models.WordPiece(
        ids, unk_token=vocabulary_lib.UNK, continuing_subword_prefix="##",
        max_input_chars_per_word=MAX_CHARS_PER_WORD))
    if lowercase:
        tokenizer.normalizer = _normalizer(casefold_patch())
    cjk = "".join(f"{_code(low)}-{_code(high)}" for low, high in _CJK_RANGES)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_DROPPED), behavior="removed"),
        pre_tokenizers.Split(Regex(f"{_PUNCTUATION}|[{cjk}]"),
                             behavior="isolated"),
    ])
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tokenizer


def tokenizer_json(vocabulary, lowercase=True):
    """The `tokenizer.json` text of `build_tokenizer(vocabulary, ...)`.

    Example:

    ```python
    import json
    from keras_attn.export.hf_tokenizer import tokenizer_json
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "self", "-", "driv",
                  "##ing", "cars"]
    config = json.loads(tokenizer_json(vocabulary))
    assert config["model"]["type"] == "WordPiece"
    ```
    """
    return build_tokenizer(vocabulary, lowercase).to_str()


def write_tokenizer_json(vocabulary, path, lowercase=True):
    """Writes `tokenizer_json(vocabulary, lowercase)` to `path` atomically;
    returns the absolute path."""
    text = tokenizer_json(vocabulary, lowercase)
    json.loads(text)  # the library's own output: a cheap sanity check
    return atomic.write_text(path, text)
