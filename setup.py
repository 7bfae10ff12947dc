"""Package discovery that pyproject.toml cannot state.

The top-level ``recipes/`` folder is installed as the resource package ``zonkey.recipes`` (its YAML
files are package data, listed in pyproject.toml), next to every package under ``zonkey/``.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["zonkey", "zonkey.*"], exclude=["*.__pycache__"]), "zonkey.recipes"],
    package_dir={"zonkey.recipes": "recipes"},
)
