"""The HTTP and WebSocket interface (aiohttp)."""
