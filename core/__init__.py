"""Shared core: the sans-I/O protocol, configuration, the Engine seam, auth, logging."""
