"""Figures of runs and ablations as PNG files (``zonkey plot``), through matplotlib's Agg backend."""
