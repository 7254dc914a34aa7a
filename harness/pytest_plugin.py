"""pytest plugin entry point (options, fixtures and markers arrive with the run engine)."""
