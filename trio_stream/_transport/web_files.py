"""The files of trio_stream/web/ (the dashboard and the browser client) by URL path.

Only names made of safe segments resolve, and only files with a known content type: a URL
can name nothing outside web/ (no "..", no hidden files, no absolute paths) and nothing that a
browser would have to guess the type of.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final
from urllib.parse import unquote

INDEX_FILE: Final = "index.html"
MAX_PATH_SEGMENTS: Final = 8
# A segment starts with a letter, digit or underscore: no ".", "..", or hidden files.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


@dataclass(frozen=True)
class WebFile:
    body: bytes
    content_type: str
    etag: str  # a strong validator: the content's hash, quoted


def web_root() -> Traversable:
    return files("trio_stream") / "web"


def find_web_file(url_path: str, root: Traversable | None = None) -> WebFile | None:
    """The file a URL path (without its query) names under web/, or None.

    ``/`` names index.html. The path is percent-decoded before it is checked, so an encoded
    ``..`` or ``/`` is refused like a plain one.
    """
    segments = safe_segments(url_path)
    if segments is None:
        return None
    if not segments:
        segments = [INDEX_FILE]
    suffix = segments[-1][segments[-1].rfind(".") :] if "." in segments[-1] else ""
    content_type = CONTENT_TYPES.get(suffix.lower())
    if content_type is None:
        return None
    node = root or web_root()
    for segment in segments:
        node = node / segment
    try:
        if not node.is_file():
            return None
        body = node.read_bytes()
    except OSError:
        return None
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    return WebFile(body, content_type, f'"{digest}"')


def safe_segments(url_path: str) -> list[str] | None:
    """The path's segments if every one is safe; None for anything suspicious."""
    try:
        path = unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        return None
    if not path.startswith("/") or "\\" in path or "\x00" in path:
        return None
    if path == "/":
        return []
    segments = path[1:].split("/")
    if len(segments) > MAX_PATH_SEGMENTS:
        return None
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        return None
    return segments
