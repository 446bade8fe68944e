"""Command-line entry points (console scripts declared in pyproject.toml): pd-train, pd-eval, pd-profile."""
