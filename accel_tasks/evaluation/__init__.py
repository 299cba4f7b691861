"""evaluation: see docs/design.md."""
