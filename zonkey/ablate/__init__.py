"""Ablations as one command: a grid of recipe variants trained, evaluated and tabulated (``zonkey ablate``)."""
