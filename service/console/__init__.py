"""The operator console's data: what its pages show, read from the running service through
the same answers as the API, without recording anything."""
