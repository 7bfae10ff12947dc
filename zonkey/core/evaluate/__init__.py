"""Evaluation.

Held-out metrics of every level, the round trip, sample and infill metrics, the byte n-gram
judge, word counting, and the settings and diffusion half of ``zonkey eval``.
"""
