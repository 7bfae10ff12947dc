"""Generation.

The walk down from a level's vectors to bytes, sampling from noise (§9.1), infilling (§9.2),
and both through a level's sequence prior.
"""
