"""examples/stream_data.py tells the lab story; it must keep telling it truthfully."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).parent.parent / "examples" / "stream_data.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stream_data", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stream_data"] = module
    spec.loader.exec_module(module)
    return module


async def test_lab_story_recorder_loses_nothing_and_others_account_for_everything(
    url: str,
) -> None:
    example = load_example()
    frames = 500
    tallies = await example.run(url, frames)
    recorder, analysis, display = tallies["recorder"], tallies["analysis"], tallies["display"]
    assert recorder.frames == frames and recorder.lost == 0
    assert recorder.seqs == list(range(1, frames + 1))
    assert analysis.seqs == sorted(set(analysis.seqs))
    assert analysis.frames + analysis.lost == frames  # every frame accounted for
    assert display.frames >= 1
    assert all(seq % 10 == 1 for seq in display.seqs)  # every 10th frame only
