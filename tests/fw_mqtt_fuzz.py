"""The firmware MQTT client against a fake socket: exact bytes out, scripted bytes in. Shared by
the CPython tests (hypothesis) and the MicroPython run of the same corpus, so it stays in the
MicroPython subset.

A malformed packet from the broker must surface as MQTTException (an OSError: the link closes
and reconnects) and never as anything else, which would kill the link task and let the watchdog
reboot the device."""

from firmware.links.mqtt_client import MQTTClient, MQTTException

CONNACK = b"\x20\x02\x00\x00"
EAGAIN = 11


class FakeSocket:
    """Just what MQTTClient calls: send/recv/settimeout/close. `rx` chunks are handed out one
    per recv(); when they run out, recv raises EAGAIN like a non-blocking socket."""

    def __init__(self, rx=()):
        self.rx = list(rx)
        self.tx = bytearray()
        self.closed = False

    def settimeout(self, t):
        pass

    def send(self, data):
        self.tx.extend(bytes(data))
        return len(data)

    def recv(self, n):
        if not self.rx:
            raise OSError(EAGAIN)
        chunk = self.rx[0]
        if len(chunk) > n:
            self.rx[0] = chunk[n:]
            return chunk[:n]
        self.rx.pop(0)
        return chunk

    def close(self):
        self.closed = True


def connected(rx=()):
    """A client that has completed CONNECT/CONNACK on a fake socket, with `rx` still to come."""
    c = MQTTClient("hcp-H1-1001", "fake")
    c.sock = FakeSocket(rx)
    c.got = []
    c.set_callback(lambda t, m: c.got.append((bytes(t), bytes(m))))
    return c


def outcome(chunks):
    """Feed `chunks` to a connected client until it has nothing left. Returns "ok" or the
    MQTTException/OSError name; any other exception propagates (that is the bug)."""
    c = connected(chunks)
    try:
        for _ in range(len(chunks) + 2):
            c.check_msg()
    except MQTTException:
        return "mqtt_error"
    except OSError:
        return "os_error"
    return "ok"


def run_corpus(corpus):
    """Outcome counts over a list of inputs (each a list of byte chunks)."""
    counts = {}
    for chunks in corpus:
        o = outcome(chunks)
        counts[o] = counts.get(o, 0) + 1
    return counts
