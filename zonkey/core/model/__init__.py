"""The network and its deterministic reads.

One level (split, compress, decode, its losses), the byte table and the stack of levels with
the encoder walk, level sequences, and what a trained model reads without sampling: splits, the
level-0 round trip, encoding to a level, the byte decode of slots.
"""
