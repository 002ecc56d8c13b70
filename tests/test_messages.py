"""Every CONTROL message round-trips; malformed ones are protocol errors."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_stream import InvalidArgument, ProtocolError
from trio_stream._protocol import messages as M

scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=10)
any_value = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return any_value
    if hint is type(None):
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(0, 2**53)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint is str:
        return st.text(max_size=20)
    if hint is bytes:
        return st.binary(max_size=20)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), scalars, max_size=3)
    if origin is list:
        return st.lists(scalars, max_size=3)
    args = typing.get_args(hint)
    if args:
        return st.one_of(*(strategy_for(a) for a in args))
    raise AssertionError(f"no strategy for {hint!r}")


def message_strategy(cls: type[M.ControlMessage]) -> st.SearchStrategy[M.ControlMessage]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


all_messages = st.sampled_from(sorted(M.MESSAGE_TYPES.values(), key=lambda c: c.OP)).flatmap(
    message_strategy
)


@settings(max_examples=500, deadline=None)
@given(all_messages)
def test_every_message_round_trips(message: M.ControlMessage) -> None:
    assert M.decode_message(M.encode_message(message)) == message


def test_unknown_op_missing_field_and_wrong_type_are_protocol_errors() -> None:
    def body(wire: dict[str, Any]) -> bytes:
        return b"\x01" + cbor2.dumps(wire)

    with pytest.raises(ProtocolError, match="unknown control message op"):
        M.decode_message(body({"op": "launch_missiles"}))
    with pytest.raises(ProtocolError, match="lacks the field 'channel'"):
        M.decode_message(body({"op": "subscribe", "id": 1}))
    with pytest.raises(ProtocolError, match=r"subscribe\.size"):
        M.decode_message(body({"op": "subscribe", "id": 1, "channel": "x", "size": "big"}))
    with pytest.raises(ProtocolError):
        M.decode_message(body({"op": "reply", "id": True}))  # bool is not an id


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"op": "hello", "v": 1.0}, "hello.v must be an integer, not a float"),
        (
            {"op": "create_channel", "id": 1, "channel": "m", "meta": [1]},
            "create_channel.meta must be a map or null, not an array",
        ),
        (
            {"op": "subscribe", "id": 1, "channel": "c", "view": "x"},
            "subscribe.view must be an array or null, not a text string",
        ),
        ({"op": "channels", "id": "7"}, "channels.id must be an integer, not a text string"),
        (
            {"op": "create_channel", "id": 1, "channel": cbor2.CBORSimpleValue(99)},
            "create_channel.channel must be a text string, not a tagged or simple value",
        ),
    ],
)
def test_a_field_of_the_wrong_kind_is_named_in_cbor_s_words(
    wire: dict[str, Any], message: str
) -> None:
    # The peer may be written in any language: "expected <class 'int'>, got float" and
    # "dict[str, typing.Any] | None" were Python's words.
    with pytest.raises(ProtocolError) as refused:
        M.decode_message(b"\x01" + cbor2.dumps(wire))
    assert str(refused.value) == f"{message} (docs/protocol.md)"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(M.MESSAGE_TYPES)), st.data())
def test_every_wrong_kind_error_is_free_of_python_words(op: str, data: st.DataObject) -> None:
    cls = M.MESSAGE_TYPES[op]
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    value = data.draw(any_value | st.binary(max_size=4) | st.floats(allow_nan=False))
    try:
        M.from_wire({"op": op, name: value})
    except ProtocolError as exc:
        for python_word in ("<class", "typing", "NoneType", "dict[", "list["):
            assert python_word not in str(exc), str(exc)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    wire = b"\x01" + cbor2.dumps({"op": "ping", "data": 1, "future_field": "x"})
    assert M.decode_message(wire) == M.Ping(data=1)


def test_error_messages_quote_wire_values_briefly() -> None:
    from trio_stream._protocol.brief import brief

    for op in ("x" * 2**20, b"\x00" * 2**16, [list(range(1000))] * 1000, 10**5000):
        text = brief(op)
        assert len(text) <= 80
    assert brief(10**5000) == "<int of 16610 bits>"
    with pytest.raises(ProtocolError, match="unknown control message op") as info:
        M.decode_message(b"\x01" + cbor2.dumps({"op": "x" * 2**20}))
    assert len(str(info.value)) < 200


# -- the sender's own check (check_fields) ----------------------------------------------------
@given(st.sampled_from(sorted(M.MESSAGE_TYPES)), st.data())
def test_the_sender_check_passes_every_field_the_receiver_takes(
    op: str, data: st.DataObject
) -> None:
    cls = M.MESSAGE_TYPES[op]
    hints = typing.get_type_hints(cls)
    fields = {f.name: data.draw(strategy_for(hints[f.name])) for f in dataclasses.fields(cls)}
    M.check_fields(cls, fields)  # what from_wire takes, the sender sends


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": 1.5}, "size must be an int or None, not float 1.5"),
        ({"size": True}, "size must be an int or None, not bool True"),
        ({"max_rate": "2"}, "max_rate must be a number or None, not str '2'"),
        ({"channel": b"c"}, "channel must be a str, not bytes b'c'"),
        ({"channel": None}, "channel must be a str, not None"),
        ({"max_rate": True}, "max_rate must be a number or None, not bool True"),
    ],
)
def test_the_sender_check_refuses_what_the_receiver_would_with_invalid_argument(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        M.check_fields(M.Subscribe, fields)
    assert str(refused.value) == message
    with pytest.raises(ProtocolError):  # and the receiver does refuse it
        M.from_wire({"op": "subscribe", "id": 1, "channel": "c", **fields})


def test_an_op_missing_or_not_text_is_said_in_the_wire_s_terms() -> None:
    # "unknown control message op None" was Python's word for a missing op, in a message
    # a client in any language reads (a protocol implementer).
    def refusal(wire: dict[str, Any]) -> str:
        with pytest.raises(M.UnknownOp) as info:
            M.decode_message(b"\x01" + cbor2.dumps(wire))
        return str(info.value)

    assert refusal({"id": 1}) == (
        'a control message without an "op": every CONTROL map names its op'
    )
    assert refusal({"op": None}) == 'a control message whose "op" is null, not text'
    assert refusal({"op": 7}) == 'a control message whose "op" is an integer, not text'
    assert refusal({"op": "launch"}) == "unknown control message op 'launch'"


_RECORD_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.integers(0, 2**63 - 1),
    st.lists(st.dictionaries(st.text(max_size=8), _RECORD_VALUES, max_size=5), max_size=40),
    st.lists(st.integers(1, 40), max_size=6),
)
@example(7, [{"n": i} for i in range(300)], [23, 1, 232])  # heads of 1, 2 and 3 bytes
@settings(max_examples=300)
def test_a_listing_spliced_from_its_parts_is_its_reply_byte_for_byte(
    request_id: int, records: list[dict[str, Any]], cuts: list[int]
) -> None:
    # A long listing is encoded a part at a time (listing.py) and spliced into its reply:
    # what encoding the whole reply gives, whatever the parts.
    parts, rest = [], records
    for cut in cuts:
        parts.append(M.EncodedItems.of(rest[:cut]))
        rest = rest[cut:]
    parts.append(M.EncodedItems.of(rest))
    body = M.list_reply_body(request_id, M.EncodedItems.joined(parts))
    assert body == M.encode_message(M.Reply(id=request_id, result=records))


@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=20),
    st.integers(0, 2**63 - 1),
    st.booleans(),
)
@example([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1], 24, True)
@settings(max_examples=300)
def test_readers_bodies_are_each_writers_notice_byte_for_byte(
    pub_ids: list[int], readers: int, lossless: bool
) -> None:
    # Made from one encoding of the rest of the map (a connection's writers on a channel
    # are each told of every reader that comes or goes): what a whole encoding gives.
    bodies = list(M.readers_bodies(pub_ids, readers, lossless))
    assert bodies == [
        M.encode_message(M.Readers(pub=pub, readers=readers, lossless=lossless)) for pub in pub_ids
    ]
    for body, pub in zip(bodies, pub_ids, strict=True):
        assert M.decode_message(body) == M.Readers(pub=pub, readers=readers, lossless=lossless)
