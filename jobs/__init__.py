"""Ray job entrypoints: `python -m jobs.<name> --config FILE [--set section.key=value ...]`."""
