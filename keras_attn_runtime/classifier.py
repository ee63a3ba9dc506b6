"""Text classification with a .tflite from `keras_attn.export.export_tflite`.

Shape legend: N texts, L input length, C classes.
"""

import numpy as np

from keras_attn_runtime import checks
from keras_attn_runtime import litert
from keras_attn_runtime.samplers import softmax
from keras_attn_runtime.tflite_file import TFLiteFile
from keras_attn_runtime.tokenizer import WordPieceTokenizer
from keras_attn_runtime.vocabulary import check_vocabulary_size
from keras_attn_runtime.vocabulary import model_vocabulary


class Classifier:
    """Classifies texts with a .tflite from `keras_attn.export.export_tflite`.

    Each text is tokenized, truncated or padded with 0 to the model's
    length `L` and run alone (the file has batch 1). A file exported with
    its vocabulary and class names (`keras_attn.export.metadata`) needs
    nothing else; arguments given here override what it carries.

    Args:
        model_path: str. The .tflite file (signature `serving_default`,
            input `token_ids` (1, L) int32, output logits (1, C)).
        vocabulary_path: str, list of str or `None`. The model's
            `vocabulary.txt` (or its tokens). Defaults to the vocabulary
            embedded in the file.
        class_names: list of str or `None`. Names in label-id order.
            Defaults to the embedded class names; without any, `classify`
            returns the label id.
        num_threads: int. LiteRT CPU threads. Defaults to `1`.
        lowercase: bool or `None`. The tokenizer's normalization.
            Defaults to the embedded setting, else `True`.
        quiet: bool. Silence LiteRT's native log lines (XNNPACK) while
            loading and on the first call. Defaults to `False`.

    Example:

    ```python
    classifier = Classifier("classifier.tflite", "vocabulary.txt",
                            class_names=["negative", "neutral", "positive"])
    label, probability = classifier.classify("What a great ride!")
    ```
    """

    def __init__(self, model_path, vocabulary_path=None, class_names=None,
                 num_threads=1, lowercase=None, quiet=False):
        interpreter = litert.load_interpreter(model_path, num_threads, quiet)
        signatures = litert.check_signatures(
            interpreter, model_path, ["serving_default"],
            "a classifier .tflite comes from keras_attn.export.export_tflite "
            "(a prefill/decode file is for `Generator`)."
        )
        inputs = signatures["serving_default"]["inputs"]
        if list(inputs) != ["token_ids"]:
            raise ValueError(
                "A classifier .tflite takes one input, `token_ids`. Received: "
                f"model_path={str(model_path)!r} with inputs {sorted(inputs)}"
            )
        self._runner = litert.SignatureRunner(interpreter, "serving_default",
                                              quiet)
        shape = self._runner.get_input_details()["token_ids"]["shape"]
        outputs = self._runner.get_output_details()
        if len(shape) != 2 or shape[0] != 1 or len(outputs) != 1:
            raise ValueError(
                "A classifier .tflite maps `token_ids` (1, L) to logits "
                f"(1, C). Received: model_path={str(model_path)!r} with "
                f"token_ids shape {list(shape)} and outputs {sorted(outputs)}"
            )
        (self._output, details), = outputs.items()
        self.sequence_length = int(shape[1])
        self.num_classes = int(details["shape"][-1])
        model_file = TFLiteFile(model_path)
        self.description = model_file.description or {}
        vocabulary, source = model_vocabulary(
            vocabulary_path, self.description.get("vocabulary"),
            "vocabulary_path", model_path=model_path)
        check_vocabulary_size(
            vocabulary, source,
            model_file.embedding_rows("serving_default", "token_ids"),
            f"the model {str(model_path)!r} embeds")
        if lowercase is None:
            lowercase = self.description.get("lowercase", True)
        self.tokenizer = WordPieceTokenizer(vocabulary, self.sequence_length,
                                            lowercase)
        if class_names is None:
            class_names = self.description.get("class_names")
        if class_names is not None:
            class_names = checks.text_list(class_names, "class_names")
            if len(class_names) != self.num_classes:
                raise ValueError(
                    f"The model has {self.num_classes} classes, so "
                    f"`class_names` needs {self.num_classes} names. "
                    f"Received: class_names={class_names!r}"
                )
        self.class_names = class_names

    def predict(self, texts):
        """Class probabilities of each text.

        Args:
            texts: str, or list of N str.

        Returns:
            float32 array `(N, C)`, rows summing to 1.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(
            isinstance(text, str) for text in texts
        ):
            raise TypeError(
                "Expected `texts` to be a str or a list of str. Received: "
                f"texts={checks.short(texts)} of type {type(texts).__name__}"
            )
        ids = np.stack([self.tokenizer.encode(text) for text in texts]
                       ) if texts else np.zeros((0, self.sequence_length))
        return self.predict_ids(ids)

    def predict_ids(self, token_ids):
        """Class probabilities of rows of token ids.

        Args:
            token_ids: int array `(N, L)`, padded with 0.

        Returns:
            float32 array `(N, C)`.
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2 or token_ids.shape[1] != self.sequence_length:
            raise ValueError(
                f"`token_ids` must have shape (N, {self.sequence_length}). "
                f"Received: token_ids.shape={token_ids.shape}"
            )
        if token_ids.size:
            checks.token_id_array(token_ids, self.tokenizer.vocabulary_size,
                                  "token_ids")
        logits = np.zeros((len(token_ids), self.num_classes), np.float64)
        for i, row in enumerate(token_ids.astype(np.int32)):
            logits[i] = self._runner(token_ids=row[None])[self._output][0]
        return softmax(logits).astype(np.float32)

    def classify(self, text):
        """The most likely class of `text` and its probability.

        Returns:
            `(label, probability)`: the class name (or id without
            `class_names`) and a float.
        """
        probabilities = self.predict([text])[0]
        best = int(np.argmax(probabilities))
        label = self.class_names[best] if self.class_names else best
        return label, float(probabilities[best])

