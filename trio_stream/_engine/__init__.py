"""Engines that carry channels between server nodes (the Redis layer; the broker plugs in later)."""
