"""reporting: see docs/design.md."""
