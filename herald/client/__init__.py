"""Herald's Python client (`herald.client`)."""
