"""The Cliniko API client and the parsing of its records into mirror rows."""
