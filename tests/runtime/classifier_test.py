"""`Classifier` runs export_tflite files with LiteRT and NumPy and gives
the Keras model's probabilities; a described file brings its vocabulary
and class names."""

import keras
import numpy as np
import pytest

from keras_attn_runtime import Classifier
from tests.references import softmax
from tests.runtime.helpers import CLASS_NAMES
from tests.runtime.helpers import CLASSIFIER_LENGTH
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow
from tests.runtime.tokenizer_test import TRICKY

pytestmark = needs_tensorflow


def keras_probabilities(exported, vocabulary, texts):
    token_ids = np.array(
        keras_hub_ids(vocabulary, texts, sequence_length=CLASSIFIER_LENGTH))
    logits = keras.ops.convert_to_numpy(exported["classifier"](token_ids))
    return softmax(logits.astype("float64"))


def test_probabilities_equal_keras(exported, tweets, vocabulary):
    texts = tweets[:24] + TRICKY[:8]
    expected = keras_probabilities(exported, vocabulary, texts)
    classifier = Classifier(exported["classifier_path"],
                            exported["vocabulary"], CLASS_NAMES)
    got = classifier.predict(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    best = int(expected[0].argmax())
    label, probability = classifier.classify(texts[0])
    assert label == CLASS_NAMES[best]
    assert abs(probability - expected[0, best]) < 1e-5
    assert classifier.predict([]).shape == (0, 3)
    unnamed = Classifier(exported["classifier_path"], exported["vocabulary"])
    assert unnamed.classify(texts[0])[0] == best


def test_described_file_brings_vocabulary_and_class_names(exported, tweets,
                                                          vocabulary):
    classifier = Classifier(exported["classifier_meta"], quiet=True)
    assert classifier.class_names == CLASS_NAMES
    assert classifier.tokenizer.vocabulary == vocabulary
    texts = tweets[:8]
    np.testing.assert_allclose(
        classifier.predict(texts),
        keras_probabilities(exported, vocabulary, texts), atol=1e-5)
    renamed = Classifier(exported["classifier_meta"], class_names=list("abc"))
    assert renamed.classify(texts[0])[0] in "abc"
    with pytest.raises(ValueError, match="has [0-9]+ tokens but the model "
                                         ".* embeds"):
        Classifier(exported["classifier_meta"],
                   exported["source_vocabulary"])


def test_bad_inputs_raise_clear_errors(exported, tmp_path):
    classifier_path = exported["classifier_path"]
    vocabulary = exported["vocabulary"]
    with pytest.raises(FileNotFoundError, match="model_path='nowhere"):
        Classifier("nowhere.tflite", vocabulary)
    with pytest.raises(ValueError, match="Not a .tflite model"):
        Classifier(vocabulary, vocabulary)
    with pytest.raises(ValueError, match="no signature 'serving_default'"):
        Classifier(exported["lm_path"], vocabulary)
    with pytest.raises(ValueError, match="class_names"):
        Classifier(classifier_path, vocabulary, ["a", "b"])
    with pytest.raises(ValueError, match="num_threads=0"):
        Classifier(classifier_path, vocabulary, num_threads=0)
    with pytest.raises(ValueError, match="carries no vocabulary"):
        Classifier(classifier_path)
    classifier = Classifier(classifier_path, vocabulary)
    size = classifier.tokenizer.vocabulary_size
    with pytest.raises(TypeError, match="texts=5"):
        classifier.predict(5)
    with pytest.raises(ValueError, match=r"token_ids.shape=\(1, 3\)"):
        classifier.predict_ids([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"outside \\[0, {size}\\)"):
        classifier.predict_ids(np.full((1, CLASSIFIER_LENGTH), size))
