"""Corpora, WordPiece tokenization and `tf.data` pipelines (TensorFlow only).

Readers return plain Python data, `tokenization` builds keras-hub
tokenizers whose `[PAD]` is id 0, and the pipelines turn both into batches
of int32 token ids for classification, language modelling and translation.
"""

from keras_attn.data.pipelines import classification_dataset
from keras_attn.data.pipelines import lm_dataset
from keras_attn.data.pipelines import translation_dataset
from keras_attn.data.readers import SENTIMENT_CLASS_NAMES
from keras_attn.data.readers import TRANSLATION_PATH
from keras_attn.data.readers import TextClassificationData
from keras_attn.data.readers import TextCorpus
from keras_attn.data.readers import load_class_names
from keras_attn.data.readers import read_lm_corpus
from keras_attn.data.readers import read_sentiment_csv
from keras_attn.data.readers import read_translation_pairs
from keras_attn.data.readers import save_class_names
from keras_attn.data.readers import train_val_test_split
from keras_attn.data.readers import tweets_csv_path
from keras_attn.data.tokenization import BOS
from keras_attn.data.tokenization import EOS
from keras_attn.data.tokenization import PAD
from keras_attn.data.tokenization import PAD_ID
from keras_attn.data.tokenization import RESERVED_TOKENS
from keras_attn.data.tokenization import UNK
from keras_attn.data.tokenization import load_vocabulary
from keras_attn.data.tokenization import make_tokenizer
from keras_attn.data.tokenization import save_vocabulary
from keras_attn.data.tokenization import tokenize_with_bos_eos
from keras_attn.data.tokenization import train_vocabulary

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "PAD_ID",
    "RESERVED_TOKENS",
    "SENTIMENT_CLASS_NAMES",
    "TRANSLATION_PATH",
    "TextClassificationData",
    "TextCorpus",
    "UNK",
    "classification_dataset",
    "lm_dataset",
    "load_class_names",
    "load_vocabulary",
    "make_tokenizer",
    "read_lm_corpus",
    "read_sentiment_csv",
    "read_translation_pairs",
    "save_class_names",
    "save_vocabulary",
    "tokenize_with_bos_eos",
    "train_val_test_split",
    "train_vocabulary",
    "translation_dataset",
    "tweets_csv_path",
]
