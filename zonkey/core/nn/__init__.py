"""The model's shared math.

Existence in log space, BOS decisions to segments, the sphere, the priors' noise schedule,
probabilistic attention and its local form, the encoder block, stitching, the loss terms of §8,
gold boundaries and their F1.
"""
