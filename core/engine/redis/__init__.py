"""RedisEngine: the Engine over N independent Redis shards (Redis ≥ 7.0 or Valkey)."""

from .engine import RedisEngine

__all__ = ["RedisEngine"]
