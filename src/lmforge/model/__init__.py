"""The transformer: one config-driven implementation for decoders and encoders."""

from lmforge.model.transformer import Transformer

__all__ = ["Transformer"]
