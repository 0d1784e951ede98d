"""Every parser that reads bytes from outside the device, driven with one input at a time and
reduced to an outcome string. Shared by the CPython fuzz tests and the MicroPython run of the
same corpora (MicroPython subset), so both runtimes must agree input by input.

The contract checked: a parser answers with its own error type (ProtocolError with a reason,
CatalogueError, or a BAD result) and nothing else. Any other exception propagates and fails the
test: on the device it would end the link task and the watchdog would reboot the evaluator.
"""

from firmware import catalogue as catmod
from protocol import cobs, frame as fr, messages as m
from protocol.errors import ProtocolError
from protocol.session import AGENT, DEVICE, Session

KEY = bytes(range(0x40, 0x60))
DEV = 1001


def sessions():
    """A device and an agent session that completed the handshake (fixed nonces)."""
    dev, ag = Session(DEV, KEY, DEVICE), Session(DEV, KEY, AGENT)
    dev.adopt(b"n" * 8, b"a" * 8)
    ag.adopt(b"n" * 8, b"a" * 8)
    return dev, ag


def _open(sess, data):
    try:
        _, t, _ = sess.open(data)
    except ProtocolError as e:
        return "err:" + e.reason
    return "ok:%d" % t


def frame_outcome(data):
    """A whole frame as received by the agent and by the device (fresh sessions each)."""
    dev, ag = sessions()
    return _open(ag, data) + "|" + _open(dev, data)


def payload_outcome(type, payload):
    """messages.decode of one payload: what a correctly signed frame would carry."""
    try:
        m.decode(type, payload)
    except ProtocolError as e:
        return "err:" + e.reason
    return "ok"


def signed_outcome(type, payload):
    """A frame of `type` with `payload`, correctly framed and signed by the right peer, opened
    by the other end: the MAC is good, so only the payload parser stands in the way."""
    dev, ag = sessions()
    down = type in m.DOWNLINK
    src, dst = (ag, dev) if down else (dev, ag)
    key = src._hello if type == m.HELLO else src._key
    seq = 0 if type == m.HELLO else 1          # a HELLO always travels with seq 0 (SPEC §4.2)
    data = fr.build(type, fr.FLAG_DOWN if down else 0, DEV, seq, bytes(payload), key)
    return _open(dst, data)


def cobs_outcome(chunks):
    """Bytes arriving in `chunks` on a serial line: the decoded items, by kind."""
    d = cobs.StreamDecoder()
    kinds = []
    for c in chunks:
        for item in d.feed(c):
            if isinstance(item, ProtocolError):
                kinds.append(item.reason)
            elif isinstance(item, (bytes, bytearray)):
                kinds.append("frame%d" % len(item))
            else:
                raise TypeError("StreamDecoder gave %r" % (item,))
    return ",".join(kinds)


def config_outcome(chunks):
    """CONFIG chunks (field dicts as decode gives them) fed to the device's assembler."""
    a = catmod.Assembler()
    out = []
    for f in chunks:
        result, cat = a.add(f)
        if result == catmod.INSTALLED:
            for i in range(cat.count):
                cat.label(i)
                cat.code(i, 4)
            out.append("installed%d" % cat.count)
        else:
            out.append("partial" if result == catmod.PARTIAL else "bad")
    return ",".join(out)


def blob_outcome(blob):
    """A catalogue blob read back from flash (or assembled)."""
    try:
        cat = catmod.Catalogue(blob)
    except catmod.CatalogueError:
        return "bad"
    for i in range(cat.count):
        cat.label(i)
        cat.code(i, 5)
    return "ok%d" % cat.count


def run_all(corpus):
    """Outcomes for a corpus {"frames": [...], "payloads": [[type, bytes]], "signed": [...],
    "cobs": [[chunks]], "config": [[fields]], "blobs": [...]} (lists in the same order)."""
    return {
        "frames": [frame_outcome(d) for d in corpus["frames"]],
        "payloads": [payload_outcome(t, p) for t, p in corpus["payloads"]],
        "signed": [signed_outcome(t, p) for t, p in corpus["signed"]],
        "cobs": [cobs_outcome(c) for c in corpus["cobs"]],
        "config": [config_outcome(c) for c in corpus["config"]],
        "blobs": [blob_outcome(b) for b in corpus["blobs"]],
    }
