"""The ``zonkey`` command line (Typer).

The app lives in :mod:`zonkey.cli.app`; shared output and error helpers in :mod:`zonkey.cli.common`.
"""
