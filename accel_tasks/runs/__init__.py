"""runs: see docs/design.md."""
