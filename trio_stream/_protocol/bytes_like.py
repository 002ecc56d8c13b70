"""The bytes-like alias used across the sans-io layer (collections.abc.Buffer is 3.12+)."""

from typing import TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview
