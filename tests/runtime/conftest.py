"""Shared fixtures of the runtime tests: the tweets, a vocabulary learned
on them, and small exported models, once per session."""

import keras
import pytest

from keras_attn import data
from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import export_tflite
from keras_attn.export import metadata
from tests.runtime.helpers import CLASS_NAMES
from tests.runtime.helpers import CLASSIFIER_LENGTH
from tests.runtime.helpers import MAX_LENGTH
from tests.runtime.helpers import SOURCE_LENGTH
from tests.runtime.helpers import TRANSLATOR_LENGTH


@pytest.fixture(scope="session")
def tweets():
    try:
        return list(data.read_sentiment_csv().texts)
    except FileNotFoundError as error:
        pytest.skip(f"no tweets corpus: {error}")


@pytest.fixture(scope="session")
def vocabulary(tweets):
    # Learned on a subset to stay fast; compared on every text.
    return data.train_vocabulary(tweets[:5000], 2000)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, vocabulary):
    """A classifier, a language model and a translator, their .tflite
    files as exported without vocabularies (`*_path`: the description holds
    kind and lengths only) and with them (`*_meta`), and the vocabulary
    file."""
    keras.utils.set_random_seed(1337)
    directory = tmp_path_factory.mktemp("device")
    vocabulary_path = directory / "vocabulary.txt"
    data.save_vocabulary(vocabulary, vocabulary_path)
    classifier = models.encoder_classifier(
        len(vocabulary), CLASSIFIER_LENGTH, num_classes=3, num_layers=1,
        hidden_dim=32, num_heads=2, dropout=0.0,
    )
    export_tflite(classifier, directory / "classifier.tflite",
                  latency_runs=1)
    lm = models.decoder_lm(len(vocabulary), MAX_LENGTH, num_layers=2,
                           hidden_dim=32, num_heads=4, num_key_value_heads=2,
                           dropout=0.0)
    export_generator_tflite(lm, directory / "lm.tflite", MAX_LENGTH,
                            sample_prompts=[])
    # The source vocabulary is the first half of the target one: a
    # different size, so that a mix-up shows.
    source_vocabulary = vocabulary[:len(vocabulary) // 2]
    translator = models.seq2seq(len(source_vocabulary), len(vocabulary),
                                SOURCE_LENGTH, TRANSLATOR_LENGTH,
                                num_layers=1, hidden_dim=16, num_heads=2,
                                dropout=0.0)
    export_generator_tflite(translator, directory / "translator.tflite",
                            TRANSLATOR_LENGTH, sample_prompts=[])
    source_path = directory / "source_vocabulary.txt"
    data.save_vocabulary(source_vocabulary, source_path)
    paths = {}
    for name, extra in (
        ("classifier", dict(class_names=CLASS_NAMES,
                            model_type="encoder_classifier")),
        ("lm", {}),
        ("translator", dict(source_vocabulary=source_vocabulary)),
    ):
        plain = directory / f"{name}.tflite"
        described = directory / "meta" / f"{name}.tflite"
        described.parent.mkdir(exist_ok=True)
        model_bytes = plain.read_bytes()
        described.write_bytes(metadata.embed(model_bytes, metadata.describe(
            model_bytes, vocabulary=vocabulary, **extra)))
        paths[f"{name}_path"] = str(plain)
        paths[f"{name}_meta"] = str(described)
    return dict(directory=directory, vocabulary=str(vocabulary_path),
                source_vocabulary=str(source_path),
                source_words=source_vocabulary,
                classifier=classifier, lm=lm, translator=translator,
                **paths)


