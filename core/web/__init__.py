"""The aiohttp layer shared by every component: JSON errors, bounded bodies, the server API."""
