"""Access control: private channels, keys, the server token, TLS; nothing leaks."""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
import trustme
from engine_marks import BOTH_ENGINES

import trio_stream as ts

pytestmark = BOTH_ENGINES


SECRET = "s3cret-key-4711"
TOKEN = "server-token-0815"


async def test_private_channel_is_invisible_and_needs_its_key(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        ts.open_client(url, name="owner") as owner,
        ts.open_client(url, name="stranger") as stranger,
        ts.open_client(url, name="friend") as friend,
    ):
        async with stranger.subscribe("$channels", policy="unbounded") as events:
            await owner.create_channel("lab/private", public=False, key=SECRET)
            await owner.create_channel("lab/public")
            with trio.fail_after(10):
                event = (await events.receive()).data
            assert event["channel"] == "lab/public"  # the private one never showed up
        assert "lab/private" not in {c.name for c in await stranger.channels()}
        assert "lab/private" in {c.name for c in await owner.channels()}  # its own

        # Without its key a private channel does not exist for a stranger: the very answer a
        # name that was never created gets, so guessing names confirms nothing.
        with pytest.raises(ts.ChannelNotFound) as missing:
            async with stranger.subscribe("lab/nothing-here"):
                pass
        for attempt_key in (None, "wrong"):
            with pytest.raises(ts.ChannelNotFound) as hidden:
                async with stranger.subscribe("lab/private", key=attempt_key):
                    pass
            expected = str(missing.value).replace("lab/nothing-here", "lab/private")
            assert str(hidden.value) == expected
            assert "key=" in str(hidden.value)  # tells a legitimate user what to do
            with pytest.raises(ts.ChannelNotFound):
                await stranger.publish("lab/private", "intrusion", key=attempt_key)
            with pytest.raises(ts.ChannelNotFound):
                await stranger.delete_channel("lab/private", key=attempt_key)

        async with (
            friend.subscribe("lab/private", key=SECRET, policy="unbounded") as sub,
            owner.publisher("lab/private") as pub,
        ):
            await pub.wait_for_readers()
            await pub.send({"temperature": 21.5})
            with trio.fail_after(10):
                assert (await sub.receive()).data == {"temperature": 21.5}
            # Whoever subscribed to a private channel is not shown with it either.
            for client in await stranger.clients():
                assert all(s.channel != "lab/private" for s in client.subscriptions)
                assert "lab/private" not in client.publishers
    assert SECRET not in caplog.text


async def test_only_the_owner_or_a_key_holder_deletes(url: str) -> None:
    async with ts.open_client(url, name="owner") as owner, ts.open_client(url, name="o") as other:
        await owner.create_channel("open")
        with pytest.raises(ts.AuthError, match="only the owner"):
            await other.delete_channel("open")
        await owner.create_channel("keyed", key=SECRET)
        await other.delete_channel("keyed", key=SECRET)
        await owner.delete_channel("open")
        assert not {"open", "keyed"} & {c.name for c in await other.channels()}


async def test_system_channels_are_read_only(url: str) -> None:
    async with ts.open_client(url) as client:
        with pytest.raises(ts.AuthError, match="read-only"):
            await client.publish("$stats", {"fake": 1})
        with pytest.raises(ts.InvalidArgument):
            await client.create_channel("$mine")
        # Not "only the owner ($server) or a holder of its key": no key deletes it (TLS audit).
        with pytest.raises(ts.AuthError) as refused:
            await client.delete_channel("$stats", key="any")
        assert (
            str(refused.value) == "'$stats' is one of the server's own channels: nobody deletes it"
        )


async def test_server_token_is_checked_at_the_handshake(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, token=TOKEN)
    server: ts.Server = await nursery.start(ts.serve, config)
    for url in (server.tcp_url, server.ws_url):
        assert url is not None
        for token in (None, "guess"):
            with pytest.raises(ts.AuthError, match="token"):
                async with ts.open_client(url, token=token):
                    pass
        async with ts.open_client(url, token=TOKEN) as client:
            assert await client.stats()
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(config)


async def test_non_loopback_bind_without_token_warns_loudly(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    config = ts.ServerConfig(host="0.0.0.0", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert "WITHOUT a token" in caplog.text
    await server.aclose()


async def test_a_host_it_cannot_listen_on_gets_no_warning_that_it_listens_there(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning "listening on ...
    # WITHOUT a token" came before the error that it could not listen there.
    config = ts.ServerConfig(host="192.0.2.1", tcp_port=0, http_port=None)
    with pytest.raises(OSError, match="Cannot assign requested address"):
        await nursery.start(ts.serve, config)
    assert "WITHOUT a token" not in caplog.text


async def test_tls_over_tcp_with_a_trusted_certificate(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=None, ssl_context=server_context
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None and server.tcp_url.startswith("tcps://")
    async with (
        ts.open_client(server.tcp_url, ssl_context=client_context) as w,
        ts.open_client(server.tcp_url, ssl_context=client_context) as r,
    ):
        await w.create_channel("secure")
        async with r.subscribe("secure") as sub, w.publisher("secure") as pub:
            await pub.wait_for_readers()
            await pub.send("over TLS")
            with trio.fail_after(10):
                assert (await sub.receive()).data == "over TLS"
    # A client that does not trust the certificate cannot connect.
    with pytest.raises(ts.ConnectionClosed):
        async with ts.open_client(server.tcp_url, ssl_context=ssl.create_default_context()):
            pass


async def test_a_private_channel_without_key_is_its_owners_alone(url: str) -> None:
    async with ts.open_client(url, name="owner") as owner, ts.open_client(url, name="o") as other:
        await owner.create_channel("mine", public=False)
        with pytest.raises(ts.ChannelNotFound, match="that you may use"):
            async with other.subscribe("mine"):
                pass
        with pytest.raises(ts.ChannelNotFound):
            await other.publish("mine", "intrusion")
        async with owner.subscribe("mine", policy="unbounded") as sub:
            await owner.publish("mine", "own use")
            with trio.fail_after(10):
                assert (await sub.receive()).data == "own use"


async def test_an_empty_key_is_refused_not_taken_for_a_key_anyone_guesses(url: str) -> None:
    # "" is what an unset string holds in most languages: as a key it made the channel
    # private to everyone, and anyone sending "" could delete it (docs/protocol.md, key).
    async with ts.open_client(url, name="owner") as owner:
        with pytest.raises(ts.InvalidArgument, match="must not be empty: leave key out"):
            await owner.create_channel("c", key="")
        assert "c" not in [c.name for c in await owner.channels()]
        await owner.create_channel("c")  # the name is still free


async def test_a_taken_name_gets_one_answer_whether_its_channel_is_private_or_not(
    url: str,
) -> None:
    async with ts.open_client(url, name="owner") as owner, ts.open_client(url, name="o") as other:
        await owner.create_channel("hidden", public=False, key=SECRET)
        await owner.create_channel("listed")
        with pytest.raises(ts.ChannelExists) as private:
            await other.create_channel("hidden")
        with pytest.raises(ts.ChannelExists) as public:
            await other.create_channel("listed")
        assert str(private.value) == str(public.value).replace("listed", "hidden")
        assert "pick another name" in str(private.value)


async def test_stats_and_metrics_count_only_public_channels(nursery: trio.Nursery) -> None:
    from trio_stream._server.metrics import render_metrics

    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with ts.open_client(server.tcp_url or "", name="owner") as owner:
        before = (await owner.stats()).channels
        for i in range(5):
            await owner.create_channel(f"private-{i}", public=False, key=SECRET)
        assert (await owner.stats()).channels == before
        await owner.create_channel("public")
        assert (await owner.stats()).channels == before + 1
        gauge = [
            line
            for line in render_metrics(server.state).splitlines()
            if line.startswith("trio_stream_channels ")
        ]
        assert gauge == [f"trio_stream_channels {before + 1}"]
        await owner.delete_channel("private-0")
        await owner.delete_channel("public")
        assert (await owner.stats()).channels == before
    await server.aclose()


@pytest.mark.parametrize("lifetime", [float("nan"), float("inf"), -1.0, 0.0])
async def test_lifetime_must_be_a_positive_finite_number(
    server: ts.Server, lifetime: float
) -> None:
    async with ts.open_client(server.tcp_url or "") as client:
        with pytest.raises(ts.InvalidArgument, match="lifetime must be a positive, finite"):
            await client.create_channel("c", lifetime=lifetime)
        assert "c" not in {c.name for c in await client.channels()}


async def test_a_publish_with_another_key_does_not_ride_on_the_right_keys_publisher(
    url: str,
) -> None:
    # publish() keeps one publisher per channel: a later publish with a wrong key (or none)
    # was sent through the one the right key had opened.
    async with (
        ts.open_client(url, name="owner") as owner,
        ts.open_client(url, name="friend") as friend,
    ):
        await owner.create_channel("lab/keyed", public=False, key=SECRET, history=5)
        assert await friend.publish("lab/keyed", 1, key=SECRET)
        for wrong in ("wrong", None):
            with pytest.raises(ts.ChannelNotFound):
                await friend.publish("lab/keyed", 2, key=wrong)
        assert await friend.publish("lab/keyed", 3, key=SECRET)

        def sync_side() -> None:
            with ts.SyncClient(url, name="script") as script:
                assert script.publish("lab/keyed", 4, key=SECRET)
                with pytest.raises(ts.ChannelNotFound):
                    script.publish("lab/keyed", 5, key="wrong")
                script.flush(timeout=10)

        await trio.to_thread.run_sync(sync_side)
        async with owner.subscribe("lab/keyed", policy="unbounded") as sub:
            with trio.fail_after(10):
                got = [(await sub.receive()).data for _ in range(3)]
        assert got == [1, 3, 4]


async def test_a_wrong_key_says_what_to_pass(url: str) -> None:
    # "wrong key for channel 'keyed'" said nothing of what to do (the CLI added its own).
    async with ts.open_client(url, name="owner") as owner, ts.open_client(url, name="o") as other:
        await owner.create_channel("keyed", key=SECRET)
        with pytest.raises(ts.AuthError) as refused:
            async with other.subscribe("keyed", key="not it"):
                pass
        assert str(refused.value) == (
            "wrong key for channel 'keyed': pass the key its creator gave (key=...)"
        )


async def test_a_server_channel_that_does_not_exist_is_said_so_not_advised_to_be_made(
    url: str,
) -> None:
    # The advice was to create it, which '$' names refuse, or to wait for it, for good (an
    # outside audit of bad input).
    async with ts.open_client(url, name="r") as reader:
        for wait in (False, True):
            with trio.fail_after(5), pytest.raises(ts.ChannelNotFound) as missing:
                async with reader.subscribe("$mine", wait_channel=wait):
                    pass
            assert "names starting with '$' are the server's own channels" in str(missing.value)
            assert "create_channel" not in str(missing.value)


async def test_a_client_of_a_gone_owners_name_deletes_its_keep_channel(url: str) -> None:
    # A restarted instrument (a new client of the old one's name) could take its keep
    # channel over but not delete it: AuthError naming itself as the owner (first-hour
    # audit). A stranger, or a keyed channel without its key, is still refused.
    async with ts.open_client(url, name="instrument") as first:
        await first.create_channel("kept/open", keep=True)
        await first.create_channel("kept/keyed", keep=True, key=SECRET)
    async with ts.open_client(url, name="stranger") as stranger:
        with pytest.raises(ts.AuthError, match="only the owner"):
            await stranger.delete_channel("kept/open")
    async with ts.open_client(url, name="instrument") as again:
        with pytest.raises(ts.AuthError, match=r"only the owner|needs its key"):
            await again.delete_channel("kept/keyed")
        await again.delete_channel("kept/keyed", key=SECRET)
        await again.delete_channel("kept/open")
        assert not {"kept/open", "kept/keyed"} & {c.name for c in await again.channels()}


async def test_taken_names_and_missing_channels_say_what_to_do(url: str) -> None:
    async with ts.open_client(url, name="one") as one, ts.open_client(url, name="two") as two:
        await one.create_channel("mine")
        with pytest.raises(ts.ChannelExists, match=r"wait_channel=True\) waits for its writer"):
            await two.create_channel("mine")
        await one.delete_channel("mine")
        # Deleted twice: not "create it with create_channel() first".
        with pytest.raises(ts.ChannelNotFound, match="that you may delete: deleted already"):
            await one.delete_channel("mine")
        with pytest.raises(ts.NameInUse, match="or close the one that has it"):
            async with ts.open_client(url, name="one"):
                pass
