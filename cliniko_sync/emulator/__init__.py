"""A local Cliniko API serving a seeded synthetic clinic, for tests, the demo and benchmarks (DESIGN §9)."""

from cliniko_sync.emulator.dataset import Clinic, active_patient_ids, generate_clinic
from cliniko_sync.emulator.server import DEMO_API_KEY, EmulatorServer, Faults, Quirks, RequestLogEntry

__all__ = [
    "DEMO_API_KEY",
    "Clinic",
    "EmulatorServer",
    "Faults",
    "Quirks",
    "RequestLogEntry",
    "active_patient_ids",
    "generate_clinic",
]
