"""Generation.

The walk down from a level's vectors to bytes, sampling from noise (§9.1), infilling (§9.2), and
the two strategies both run on (a level's sequence prior, or segment by segment), chosen once.
"""
