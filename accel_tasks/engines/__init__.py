"""engines: see docs/design.md."""
