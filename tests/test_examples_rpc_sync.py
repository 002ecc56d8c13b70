"""examples/rpc_service.py and examples/sync_script.py: they run, and they tell the truth.

Each runs in-process against the test server (both transports), as a script on its own (it
starts its own server), and rpc_service's two roles as two processes against one server.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio

import trio_stream as ts

EXAMPLES = Path(__file__).parent.parent / "examples"
SCRIPT_TIMEOUT_S = 60.0


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def run_script(*args: str) -> str:
    with trio.fail_after(SCRIPT_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    return output


async def test_rpc_service_demo_against_a_server(url: str) -> None:
    seen = await load("rpc_service").demo(url)
    assert 15.0 < seen["temperature"] < 30.0
    assert seen["fps"] > 10  # the stream really sped up from 2 Hz
    assert seen["remote_error"] == "ValueError"
    assert seen["timeout"] is True
    assert seen["rate"] == 2.0


async def test_rpc_service_runs_alone() -> None:
    output = await run_script(str(EXAMPLES / "rpc_service.py"))
    assert "control: the instrument refused: ValueError" in output
    assert "calibrate did not finish" in output


async def test_a_second_rpc_service_runs_beside_the_first_under_another_name(
    server: ts.Server,
) -> None:
    # Troubleshooting says "--name" for a NameInUse; the example had no such option.
    assert server.tcp_url is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(load("rpc_service").instrument, server.tcp_url)  # "thermo"
        output = await run_script(
            str(EXAMPLES / "rpc_service.py"), server.tcp_url, "--name", "thermo2"
        )
        nursery.cancel_scope.cancel()
    assert "control: the instrument refused: ValueError" in output


async def test_rpc_service_roles_in_two_processes(server: ts.Server) -> None:
    assert server.tcp_url is not None
    script = str(EXAMPLES / "rpc_service.py")
    instrument = await trio.lowlevel.open_process(
        [sys.executable, script, server.tcp_url, "--role", "instrument"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The control script waits for the instrument to come up by itself.
        output = await run_script(script, server.tcp_url, "--role", "control")
    finally:
        instrument.kill()
        await instrument.wait()
    assert "control: temperature" in output
    assert "refused: ValueError" in output


async def test_rpc_service_refuses_a_rate_that_is_no_number(server: ts.Server) -> None:
    # What `trio-stream call URL thermo set_rate fast` sends: the string "fast".
    assert server.tcp_url is not None
    example = load("rpc_service")
    async with trio.open_nursery() as nursery:
        await nursery.start(example.instrument, server.tcp_url)
        async with ts.open_client(server.tcp_url, name="operator") as client:
            thermo = await client.rpc(example.INSTRUMENT, timeout=5.0)
            with pytest.raises(ts.RemoteError) as refused:
                await thermo.set_rate("fast")
            assert await thermo.set_rate(5) == 5.0  # the instrument goes on
        nursery.cancel_scope.cancel()
    assert refused.value.type_name == "TypeError"
    assert refused.value.message == "hz must be a number of Hz (0.1 to 100), not 'fast'"


@pytest.mark.parametrize("name", ["stream_data", "sync_script", "rpc_service"])
async def test_an_example_given_a_url_without_a_server_says_so_in_one_line(name: str) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with trio.fail_after(SCRIPT_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, str(EXAMPLES / f"{name}.py"), url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1, lines
    assert len(lines) == 1 and lines[0].startswith(f"{name}: ConnectionClosed: cannot connect")


async def test_sync_script_against_a_server(url: str) -> None:
    example = load("sync_script")
    with trio.fail_after(SCRIPT_TIMEOUT_S):
        result = await trio.to_thread.run_sync(example.run, url, 50, abandon_on_cancel=True)
    assert result["matches"] == 50
    assert "Spectra" in result["channels"]


async def test_sync_script_runs_alone() -> None:
    output = await run_script(str(EXAMPLES / "sync_script.py"), "--frames", "100")
    assert "100 of 100 identical" in output
