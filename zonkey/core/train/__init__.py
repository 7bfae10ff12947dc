"""Training.

The trainer, the optimiser with its schedules and EMA, distributed data parallel, and fitting
text-derived tables before step 0.
"""
