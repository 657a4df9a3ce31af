"""Vision model families, the class-name registry and per-task heads."""
