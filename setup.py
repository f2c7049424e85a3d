"""Thin shim: metadata, dependencies and console scripts live in pyproject.toml."""
from setuptools import setup

setup()
