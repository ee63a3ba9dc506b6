"""Functional model builders for the three uses of attention, and cached
generation."""

from keras_attn.models.decoder_lm import decoder_lm
from keras_attn.models.encoder_classifier import encoder_classifier
from keras_attn.models.generation import CachedDecoder
from keras_attn.models.generation import generate
from keras_attn.models.generation import make_sampler
from keras_attn.models.generation import trace_count
from keras_attn.models.seq2seq import seq2seq

__all__ = [
    "CachedDecoder",
    "decoder_lm",
    "encoder_classifier",
    "generate",
    "make_sampler",
    "seq2seq",
    "trace_count",
]
