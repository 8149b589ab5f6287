"""Sans-I/O protocol core: envelopes, codecs, validation, close codes, the session state machine.

Nothing in this package imports asyncio, aiohttp or redis; time is passed in, never read.
"""
