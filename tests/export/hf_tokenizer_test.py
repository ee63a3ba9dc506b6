"""The HF `tokenizer.json` of a vocabulary gives the ids of
`keras_attn.data.make_tokenizer` (keras-hub on tensorflow-text, the
reference) on tricky text, on our corpora, and inside a LiteRT-LM bundle
through the engine's own tokenizer."""

import json

import numpy as np
import pytest

from keras_attn import data
from keras_attn.export import hf_tokenizer
from tests.runtime.helpers import keras_hub_ids

TRICKY = [
    "Straße STRASSE \u1e9e",  # ß and capital ß fold to "ss"
    "ΣΊΣΥΦΟΣ σοφός ς",  # final sigma folds to σ
    "\u13a0\uab70 \u13f8",  # Cherokee: folds to the capitals
    "no\u00a0break\u3000space",  # no-break spaces stay inside the word
    "zero\u200bwidth soft\u00adhyphen \ufeffbom",  # format chars split
    "ＦＵＬＬ ｗｉｄｔｈ！ ½ ² ℃ Ⅻ ﬁne ﬅ",  # compatibility forms
    "日本語のテキスト 中文",  # CJK ideographs are words of their own
    "emoji 😀👍🏽 ok",
    "İstanbul ǅemal ǰ ŉ ᾳ e\u0301",  # special casings, combining marks
    "a\tb\nc\rd\fe   f",  # ASCII whitespace
    "x" * 101 + " y" * 3,  # longer than 100 bytes: [UNK]
    "don't stop-me now... (really) #tag @user http://t.co/x?y=1",
    "\u115fhangul filler \u180bvariation \U000e0041tag",  # ignorables
]


def _char_vocabulary(texts, lowercase=True):
    """Every character of the reference tokenizer's words, alone and as a
    `##` piece: words become characters, so any difference in
    normalization changes ids (not just turns both into [UNK])."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    joined = "".join(texts)
    if lowercase:
        joined = tf_text.case_fold_utf8(tf.constant(joined)).numpy().decode()
    chars = sorted(set(joined) - set(" \t\n\r\f"))
    return list(data.RESERVED_TOKENS) + chars + [f"##{c}" for c in chars]


def _hf_ids(vocabulary, texts, lowercase=True):
    tokenizer = hf_tokenizer.build_tokenizer(vocabulary, lowercase)
    return [encoding.ids for encoding in
            tokenizer.encode_batch(texts, add_special_tokens=False)]


def _mismatches(vocabulary, texts, lowercase=True):
    expected = keras_hub_ids(vocabulary, texts, lowercase)
    got = _hf_ids(vocabulary, texts, lowercase)
    return [(text, want, have) for text, want, have
            in zip(texts, expected, got) if want != have]


@pytest.mark.parametrize("lowercase", [True, False])
def test_tricky_text_gives_our_ids(lowercase):
    vocabulary = _char_vocabulary(TRICKY, lowercase)
    assert _mismatches(vocabulary, TRICKY, lowercase) == []


def test_whole_words_and_unknown_words():
    vocabulary = list(data.RESERVED_TOKENS) + [
        "self", "-", "driv", "##ing", "cars", "!", "stra", "##sse"]
    texts = ["Self-driving cars!", "STRASSE straße", "unknown words",
             "drivingcars", "##ing"]
    assert _mismatches(vocabulary, texts) == []
    tokenizer = hf_tokenizer.build_tokenizer(vocabulary)
    assert tokenizer.encode("Self-driving cars!",
                            add_special_tokens=False).ids == [
        4, 5, 6, 7, 8, 9]
    # No special tokens: "[BOS]" in text is text, as in keras-hub.
    assert _mismatches(vocabulary, ["[BOS] hi [EOS]"]) == []


@pytest.fixture(scope="module")
def tweets():
    try:
        return list(data.read_sentiment_csv().texts)
    except FileNotFoundError as error:
        pytest.skip(f"no tweets corpus: {error}")


@pytest.fixture(scope="module")
def translations():
    try:
        return data.read_translation_pairs()
    except (FileNotFoundError, ImportError) as error:
        pytest.skip(f"no translation corpus: {error}")


def test_corpus_samples_give_our_ids(tweets, translations):
    """Every 10th text of each corpus, split into characters (all texts
    with learned vocabularies: the large test)."""
    sample = tweets[::10] + [text for pair in translations[::10]
                             for text in pair]
    assert _mismatches(_char_vocabulary(sample), sample) == []


def test_casefold_patch_covers_the_corpora(tweets, translations):
    patch = hf_tokenizer.casefold_patch()
    assert len(patch.residual) < 100, [hex(c) for c in patch.residual]
    seen = {ord(c) for text in tweets for c in text}
    seen |= {ord(c) for pair in translations for text in pair for c in text}
    assert seen.isdisjoint(patch.residual)
    # The rules hold what NFKC + Lowercase get wrong, e.g. "ß" -> "ss".
    assert patch.after["ß"] == "ss"
    assert patch.before["\u00a0"] == hf_tokenizer.SPACE_STAND_IN


def test_write_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer

    vocabulary = _char_vocabulary(TRICKY)
    path = hf_tokenizer.write_tokenizer_json(vocabulary,
                                             tmp_path / "tokenizer.json")
    assert path == str(tmp_path / "tokenizer.json")
    config = json.loads(open(path, encoding="utf-8").read())
    assert config["model"]["type"] == "WordPiece"
    assert config["added_tokens"] == []
    loaded = Tokenizer.from_file(path)
    assert [loaded.encode(text, add_special_tokens=False).ids
            for text in TRICKY] == keras_hub_ids(vocabulary, TRICKY)
    with pytest.raises(ValueError, match="vocabulary"):
        hf_tokenizer.tokenizer_json(["[UNK]", "a"])
    with pytest.raises(TypeError, match="`lowercase`"):
        hf_tokenizer.tokenizer_json(vocabulary, lowercase="yes")


@pytest.mark.large
def test_every_text_of_the_corpora_gives_our_ids(tweets, translations,
                                                 tmp_path):
    """All tweets (as read for classification and, repaired, for the
    language model) and all sentences of both translation sides, with a
    vocabulary learned on the whole corpus; through the `tokenizers`
    library and through LiteRT-LM's engine (`engine.tokenize`)."""
    litert_lm = pytest.importorskip("litert_lm")
    import keras

    from keras_attn import models
    from keras_attn.export import export_litertlm

    corpora = {
        "tweets": sorted(set(tweets) | set(data.read_lm_corpus().texts)),
        "german": [de for de, _ in translations],
        "english": [en for _, en in translations],
    }
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    for name, texts in corpora.items():
        vocabulary = data.train_vocabulary(texts, 8000)
        expected = keras_hub_ids(vocabulary, texts)
        got = _hf_ids(vocabulary, texts)
        bad = [text for text, want, have in zip(texts, expected, got)
               if want != have]
        assert bad == [], (name, len(bad), bad[:3])
        keras.utils.set_random_seed(0)
        model = models.decoder_lm(len(vocabulary), 8, num_layers=1,
                                  hidden_dim=16, num_heads=2)
        path = export_litertlm(model, tmp_path / f"{name}.litertlm",
                               vocabulary, prefill_lengths=(1,),
                               sample_prompts=[]).path
        engine = litert_lm.Engine(path, backend=litert_lm.Backend.CPU(),
                                  cache_dir=":nocache")
        bad = [text for text, want in zip(texts, expected)
               if list(engine.tokenize(text)) != list(want)]
        engine.close()
        assert bad == [], (name, "engine", len(bad), bad[:3])
        assert np.sum([len(ids) for ids in expected]) > 100_000
