"""In-process fan-out micro-benchmark: one publish to 4 readers, no sockets, no event loop.

Broker.publish_batch (what the server calls for a read's consecutive PUBLISH frames of one
writer; ``--per-frame``: Broker.publish per frame, as before issue 9's second pass) -> each
reader's Outbox -> Outbox.next_batch (the pieces of one write), with credit returned per
batch. Prints microseconds of CPU per frame published (best of 5).

    python benchmarks/fanout.py
    python benchmarks/fanout.py --per-frame
    python benchmarks/fanout.py --batch 300 --readers 16   # one read's worth under load
    python benchmarks/fanout.py --batch 300 --held-back    # block readers, writer parked

``--held-back``: the readers are ``block`` subscriptions (size 1000) whose buffers stay
full, so every frame published is parked for them and moved in once a write makes room
(the steady state of a writer faster than its block readers, as in cpu_per_frame.py).
"""

from __future__ import annotations

import argparse
import time

from trio_stream._server.broker import Broker
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox

READERS = 4
FRAMES = 200_000
BATCH = 50  # PUBLISH frames per read; a loaded server reads several hundred at once
PAYLOAD = memoryview(bytes(100))
BUFFER_FRAMES = 1000  # each reader's buffer size


class _Owner:
    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.name = f"c{client_id}"

    def wake_sender(self) -> None:
        pass

    def parked_room(self) -> None:
        pass

    def hold_started(self, deadline: float) -> None:
        pass

    def writer_ended(self, pub_id: int) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-frame", action="store_true", help="Broker.publish per frame")
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument("--batch", type=int, default=BATCH, help="frames per publish_batch")
    parser.add_argument("--held-back", action="store_true", help="full block readers")
    args = parser.parse_args()
    batch = args.batch
    clock = time.monotonic
    broker = Broker(clock=clock)

    def outbox(owner: _Owner) -> Outbox:
        return Outbox(
            owner,
            max_buffered_bytes=1 << 30,
            max_parked_bytes=1 << 30,
            clock=clock,
            detach=broker.unsubscribe,
        )

    writer_owner = _Owner(0)
    channel = broker.create_channel("c", writer_owner)
    writer_box = outbox(writer_owner)
    writer = broker.open_publisher(channel, writer_owner, writer_box, 1)
    outboxes = [outbox(_Owner(i + 1)) for i in range(args.readers)]
    readers = []
    policy = Policy.BLOCK if args.held_back else Policy.DROP_OLDEST
    window = batch if args.held_back else 1024  # held back: a write makes room for a batch
    for box in outboxes:
        reader = box.open_reader(channel, policy, BUFFER_FRAMES, 1, None, window, 8 << 20, None)
        broker.subscribe(reader)
        readers.append(reader)
    per_frame = args.per_frame or not hasattr(broker, "publish_batch")
    times = [1.0] * batch
    payloads = [PAYLOAD] * batch
    if args.held_back:
        # Fill the buffers and park a batch or so beyond them (within the writer's window).
        for _ in range(-(-(BUFFER_FRAMES + batch) // batch)):
            broker.publish_batch(writer, times, payloads)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(FRAMES // batch):
            if per_frame:
                for _ in range(batch):
                    broker.publish(writer, 1.0, PAYLOAD)
            else:
                broker.publish_batch(writer, times, payloads)
            for box, reader in zip(outboxes, readers, strict=True):
                box.next_batch()
                box.credit(reader.sub_id, batch)
            writer_box.next_batch()  # the writer's acknowledgements
        best = min(best, (time.process_time() - start) / FRAMES * 1e6)
    how = "frame by frame" if per_frame else f"in batches of {batch}"
    if args.held_back:
        how += f", every frame parked ({writer.parked_frames} at the end)"
    print(
        f"fan-out: {best:.3f} us per frame published to {args.readers} readers "
        f"({how}; best of 5, CPU time)"
    )


if __name__ == "__main__":
    main()
