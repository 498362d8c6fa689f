"""Allow `python -m cliniko_sync`."""

from cliniko_sync.cli import main

main()
