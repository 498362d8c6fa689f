"""`cliniko-sync emulator` and `demo`."""

from __future__ import annotations

from typing import Any

import typer

from cliniko_sync.cli_help import examples
from cliniko_sync.emulator import DEMO_API_KEY
from cliniko_sync.emulator.quirks import BOOLEAN_QUIRKS

EMULATOR_EXAMPLES = examples(
    "cliniko-sync emulator",
    "cliniko-sync emulator --port 8766 --patients 5000 --rate-limit 0",
)
DEMO_EXAMPLES = examples(
    "cliniko-sync demo",
    "cliniko-sync list-active demo-clinic --limit 5",
    "cliniko-sync org remove demo-clinic --yes",
)


def emulator(
    port: int = typer.Option(
        8765, "--port", metavar="PORT", min=0, max=65535, help="Loopback port to listen on (0 picks a free one)."
    ),
    patients: int = typer.Option(630, "--patients", metavar="N", min=0, help="Synthetic patients to generate."),
    appointments: int = typer.Option(
        None,
        "--appointments",
        metavar="N",
        min=0,
        help="Individual appointments + class attendances (default 10 per patient).",
    ),
    seed: int = typer.Option(1, "--seed", metavar="N", help="Same seed, same clinic."),
    rate_limit: int = typer.Option(
        200, "--rate-limit", metavar="N", min=0, help="Requests per key per window before 429 (0: off)."
    ),
    rate_window: float = typer.Option(
        60.0, "--rate-window", metavar="SECONDS", min=0.001, help="Rate-limit window in seconds."
    ),
    latency_ms: float = typer.Option(
        0.0, "--latency-ms", metavar="MS", min=0, help="Delay added to every answer, in ms."
    ),
    api_key: str = typer.Option(
        DEMO_API_KEY,
        "--api-key",
        metavar="KEY",
        help="The key the emulator accepts (a throwaway key, not a Cliniko one).",
    ),
    quirk: list[str] = typer.Option(
        [],
        "--quirk",
        metavar="NAME",
        help="Switch on a non-default (permissive or broken) behaviour by name; repeatable. "
        "Names: " + ", ".join(BOOLEAN_QUIRKS) + ".",
    ),
) -> None:
    """Serve a synthetic Cliniko API on 127.0.0.1 until Ctrl-C (no real patient data)."""
    from cliniko_sync.emulator.server import Quirks, serve_until_interrupted

    unknown = sorted(set(quirk) - set(BOOLEAN_QUIRKS))
    if unknown:
        raise typer.BadParameter(
            f"unknown quirk {', '.join(unknown)} (known: {', '.join(BOOLEAN_QUIRKS)})", param_hint="--quirk"
        )

    switched: dict[str, Any] = dict.fromkeys(quirk, True)
    serve_until_interrupted(
        port=port,
        patients=patients,
        appointments=appointments,
        seed=seed,
        api_key=api_key,
        rate_limit=rate_limit or None,
        rate_window=rate_window,
        latency_ms=latency_ms,
        announce=lambda message: typer.echo(message, err=True),
        quirks=Quirks(**switched),
    )


def demo() -> None:
    """Zero-configuration demo: embedded database, built-in emulator, a full sync, then the active patients."""
    from cliniko_sync.config import current_settings
    from cliniko_sync.demo import demo as run

    run(current_settings())
