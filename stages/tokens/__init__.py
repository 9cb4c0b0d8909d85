"""Tokens: tokenizers, the tokenize stage, packing rows per mixture group, Megatron indexed files."""
