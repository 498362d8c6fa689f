"""Pytest fixtures that run the Cliniko emulator on loopback (registered from conftest.py)."""
