"""Benchmarks for DESIGN §10: `python -m bench --size S|M|L` prints the figures, a naive baseline's, and the targets."""
