"""cliniko-sync: copy Cliniko patients and appointments into PostgreSQL and compute active patients."""

__version__ = "0.1.0"
