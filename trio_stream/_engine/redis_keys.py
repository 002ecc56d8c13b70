"""Where everything lives in Redis: the one place that spells key names.

All keys of one deployment share a namespace prefix (``ts`` by default), so several
deployments (or tests) can share a Redis database without seeing each other:

- ``{ns}:channels``             set of channel names
- ``{ns}:ch:{name}``            hash: owner, node, holder, options, epoch, seq, created, key salt
                                and hash
- ``{ns}:st:{name}:{epoch}``    the channel's frames (a stream; one entry per writer batch, id
                                ``{seq}-0`` of its last frame; redis_streams)
- ``{ns}:wake:{node}``          a one-entry stream that interrupts a node's blocked XREAD
- ``{ns}:nodes``                sorted set node -> expiry (Redis time, ms) refreshed by heartbeats
- ``{ns}:run:{node}``           the id of the process that runs as that node (a restart under
                                its name changes it): claimed at start (SET NX), renewed by
                                each heartbeat, expires with it
- ``{ns}:clients:{node}``       hash client id -> info (expires with the node's heartbeat)
- ``{ns}:name:{name}``          string: the node holding a client name (expires likewise)
- ``{ns}:readers:{node}``       hash channel -> local reader count (expires likewise)
- ``{ns}:pos:{name}:{epoch}``   hash node -> last seq that node has taken, and the room of
                                its ``block`` readers if any (redis_positions)
- ``{ns}:del:{name}:{epoch}``   string: that epoch of the channel was deleted (expires after an
                                hour): a node that missed the news does not register it again
- ``{ns}:held:{name}:{epoch}``  hash writer -> "start last": since when its oldest frame
                                waits for room, and when it said so last (redis_holds)
- ``{ns}:wr:{epoch}:{len}:{sender}:{writer key}``  hash of a writer its client named
                                (``len``: the sender name's length): ``n`` its frames in the
                                stream, ``o`` the token of its last claim (redis_streams);
                                expires a day after its last batch or claim
- ``{ns}:{db}:ctl`` / ``{ns}:{db}:ctl:{node}``  pub/sub control channels: broadcast / one
                                node. Pub/sub is the whole Redis server's, not a database's:
                                the database number keeps two clusters on two databases of
                                one Redis apart (their keys are apart already)
- ``{ns}:ctlmsg:{node}:{id}``  string: a control message too large for pub/sub, sent by
                                ``node``; its pub/sub message carries only this key
                                (redis_control); expires after a minute if nobody read it

The stream key carries the epoch, so frames written under one epoch can never be read as
frames of another: after a reset the old key is simply silent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeySpace:
    namespace: str = "ts"
    database: int = 0  # the URL's: in the pub/sub channels' names (see the module docstring)

    @property
    def channels(self) -> str:
        return f"{self.namespace}:channels"

    def channel(self, name: str) -> str:
        return f"{self.namespace}:ch:{name}"

    def stream(self, name: str, epoch: str) -> str:
        return f"{self.namespace}:st:{name}:{epoch}"

    def wake(self, node: str) -> str:
        return f"{self.namespace}:wake:{node}"

    @property
    def nodes(self) -> str:
        return f"{self.namespace}:nodes"

    def run(self, node: str) -> str:
        return f"{self.namespace}:run:{node}"

    def clients(self, node: str) -> str:
        return f"{self.namespace}:clients:{node}"

    def name(self, client_name: str) -> str:
        return f"{self.namespace}:name:{client_name}"

    def readers(self, node: str) -> str:
        return f"{self.namespace}:readers:{node}"

    def positions(self, name: str, epoch: str) -> str:
        return f"{self.namespace}:pos:{name}:{epoch}"

    def deleted(self, name: str, epoch: str) -> str:
        return f"{self.namespace}:del:{name}:{epoch}"

    def held(self, name: str, epoch: str) -> str:
        return f"{self.namespace}:held:{name}:{epoch}"

    def writer(self, epoch: str, sender: str, writer_key: str) -> str:
        # The epoch names one channel's life (random per creation); the sender's length keeps
        # two (sender, key) pairs from spelling the same key.
        return f"{self.namespace}:wr:{epoch}:{len(sender)}:{sender}:{writer_key}"

    @property
    def control(self) -> str:
        return f"{self.namespace}:{self.database}:ctl"

    def control_for(self, node: str) -> str:
        return f"{self.namespace}:{self.database}:ctl:{node}"

    def control_message(self, node: str, ident: str) -> str:
        return f"{self.namespace}:ctlmsg:{node}:{ident}"
