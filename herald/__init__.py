"""Herald — a realtime push broker (WebSocket and SSE) with durable fan-out and resume."""

__version__ = "0.1.0"
