"""The interface every data link gives the RL1 engine (links/uplink.py).

A link moves whole RL1 frames; it knows nothing about their content. All calls are
non-blocking (or bounded: an MQTT connect), so the engine can run them from one asyncio task.

    connect()      open the link; raises OSError when it can't (the engine backs off and retries)
    poll()         frames received since the last call: a list of bytes, or ProtocolError items
                   for framing damage the link itself saw (serial COBS); raises OSError when the
                   link broke
    send(frame)    queue/send one frame; raises OSError when the link broke. A frame that can't be
                   sent may be dropped: RL1 retransmits
    close()        drop the link (idempotent)
    up             True between a successful connect() and close()/failure
    kind           "serial" or "mqtt" (for STATUS and logs)
"""


class Link:
    kind = "none"

    def __init__(self):
        self.up = False
        self.sent = 0
        self.received = 0
        self.dropped = 0

    def connect(self):
        raise OSError("no link")

    def poll(self):
        return []

    def send(self, frame):
        raise OSError("no link")

    def close(self):
        self.up = False
