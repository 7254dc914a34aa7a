"""Host-side device targets: connect to a device, check what it runs, and drive inferences."""
