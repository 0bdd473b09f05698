"""Pipeline steps, one module each: `python -m safecompress.steps.<step> --help`."""
