"""Thin Typer commands: parse options, call plain functions, print results."""
