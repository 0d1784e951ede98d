"""Checks one RL1 test vector. Runs unchanged under CPython and MicroPython (keep it in the
MicroPython subset): the CPython tests import it, the MicroPython tests copy it into the runtime.
"""

from protocol import messages as m
from protocol.cobs import StreamDecoder, encode
from protocol.errors import ProtocolError
from protocol.session import Session, DEVICE, AGENT


def _receiver(v):
    key = bytes.fromhex(v["device_key_hex"])
    rx = Session(v["device_id"], key, AGENT if v["direction"] == "uplink" else DEVICE)
    nd = bytes.fromhex(v["nonce_device_hex"])
    na = bytes.fromhex(v["nonce_agent_hex"])
    kind = v.get("kind")
    if kind == "HELLO_ACK":
        rx.nonce_device = nd          # the device sent HELLO with this nonce
    elif kind != "HELLO":
        rx.adopt(nd, na)
    for p in v.get("prior_frames_hex", []):
        rx.open(bytes.fromhex(p))
    return rx


def _sender(v):
    key = bytes.fromhex(v["device_key_hex"])
    tx = Session(v["device_id"], key, DEVICE if v["direction"] == "uplink" else AGENT)
    tx.adopt(bytes.fromhex(v["nonce_device_hex"]), bytes.fromhex(v["nonce_agent_hex"]))
    return tx


def encode_message(v):
    """Rebuild frame bytes from the vector's decoded message (valid vectors)."""
    msg = v["message"]
    type, fields = m.from_jsonable(msg["fields"])
    tx = _sender(v)
    if type == m.HELLO:
        f = dict(fields)
        nonce = f.pop("nonce")
        return tx.hello(nonce, f)
    if type == m.HELLO_ACK:
        f = dict(fields)
        nonce = f.pop("nonce")
        return tx.hello_ack(nonce, f)
    if not (msg["flags"] & 0x02):
        return _unsigned(v, type, fields)
    tx.tx_seq = msg["seq"] - 1
    extra = msg["flags"] & 0x0C    # MORE / RETX hints
    return tx.seal(type, fields, extra)[1]


def _unsigned(v, type, fields):
    from protocol import frame as fr
    flags = 0x01 if v["direction"] == "downlink" else 0
    return fr.build(type, flags, v["device_id"], v["message"]["seq"], m.encode(type, fields))


def check(v):
    """Raise AssertionError unless the vector behaves as it says. Returns a short status."""
    frame = bytes.fromhex(v["frame_hex"])
    wire = bytes.fromhex(v["wire_hex"])
    if frame and len(frame) <= 254:
        assert encode(frame) + b"\x00" == wire, v["name"] + ": wire_hex is not COBS(frame_hex)+00"
    items = StreamDecoder().feed(wire)
    assert len(items) == 1, v["name"] + ": stream decoder gave %d items" % len(items)
    item = items[0]
    if isinstance(item, ProtocolError):
        assert not v["valid"], v["name"] + ": stream decoder rejected a valid frame: " + str(item)
        assert item.reason == v["error"], v["name"] + ": got %s, want %s" % (item.reason, v["error"])
        return "rejected by stream: " + item.reason
    assert item == frame, v["name"] + ": stream decoder changed the bytes"
    rx = _receiver(v)
    try:
        f, type, fields = rx.open(frame)
    except ProtocolError as e:
        assert not v["valid"], v["name"] + ": valid frame rejected: " + str(e)
        assert e.reason == v["error"], v["name"] + ": got %s, want %s" % (e.reason, v["error"])
        return "rejected: " + e.reason
    assert v["valid"], v["name"] + ": invalid frame accepted"
    got = {"device_id": f.device_id, "seq": f.seq, "flags": f.flags,
           "fields": m.to_jsonable(type, fields)}
    assert got == v["message"], v["name"] + ": decoded %r, want %r" % (got, v["message"])
    again = encode_message(v)
    assert again == frame, v["name"] + ": re-encoding differs"
    return "ok"
