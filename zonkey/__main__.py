"""``python -m zonkey``: the same command line as the ``zonkey`` script (also under ``torchrun -m``)."""

from zonkey.cli.app import main

if __name__ == "__main__":
    main()
