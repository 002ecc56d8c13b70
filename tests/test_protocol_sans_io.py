"""The wire format's owner, trio_stream/_protocol/, is sans-io: no event loop, no sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import trio_stream._protocol

FORBIDDEN = {"trio", "socket", "ssl", "selectors", "asyncio", "anyio", "trio_websocket"}
PROTOCOL_DIR = Path(trio_stream._protocol.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # Relative imports must stay in the package's I/O-free modules.
            target = (node.module or "").split(".")[0]
            names.add(f".{target}" if node.level == 1 else f"..{target}")
    return names


def test_protocol_modules_import_neither_trio_nor_sockets() -> None:
    files = sorted(PROTOCOL_DIR.glob("*.py"))
    assert len(files) > 5
    for path in files:
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if name.startswith(".."):
                # Out of _protocol only to the exceptions (plain classes).
                assert name == ".._exceptions", f"{path.name} imports {name}"
