"""Splitters: the learned Segment Splitter (§4) and the rule-based baselines."""

from zonkey.components.splitter import entropy, fixed, learned, whitespace  # noqa: F401
