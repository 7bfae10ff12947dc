"""What every component and level agrees on.

The registry, a Protocol per component kind, the dataclasses that cross component boundaries,
the axis legend and LevelContext. Imports nothing else of zonkey.
"""
