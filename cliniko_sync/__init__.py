"""cliniko-sync: copy Cliniko patients and appointments into PostgreSQL and compute active patients."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written; an installed package carries it in its metadata.
    __version__ = version("cliniko-sync")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e . fixes that)
    __version__ = "0+unknown"
