"""The edge node: WebSocket and SSE termination, auth, per-connection state, local fan-out."""
