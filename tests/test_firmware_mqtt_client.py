"""The firmware's MQTT client byte by byte (a fake socket, in the style of umqtt.simple's test),
fuzzed on CPython (hypothesis) and on MicroPython (the same corpus), and the whole app against
a rogue broker on loopback that sends a malformed PUBLISH: the link reconnects, the device does
not reboot."""
from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fw_mqtt_fuzz as fz
from firmware.app import App
from firmware.board.sim import SimBoard
from firmware.config import Config
from firmware.links import mqtt_client
from firmware.links.mqtt_client import MQTTClient, MQTTException
from fw_rig import DEV, KEY

HERE = Path(__file__).resolve().parent


def publish_packet(topic: bytes, msg: bytes, qos: int = 1, pid: int = 7) -> bytes:
    var = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", pid) if qos else b"")
    return bytes([0x30 | qos << 1]) + mqtt_client._remaining(len(var) + len(msg)) + var + msg


# -- exact bytes ---------------------------------------------------------------------------

class FakeSocketModule:
    """Stands in for the `socket` module in connect(): hands out one FakeSocket."""

    def __init__(self, rx):
        self.sock = fz.FakeSocket(rx)

    def getaddrinfo(self, host, port):
        return [(0, 0, 0, "", (host, port))]

    def socket(self):
        s = self.sock
        s.connect = lambda addr: None
        return s


def test_connect_bytes_with_will_and_login(monkeypatch):
    fake = FakeSocketModule([fz.CONNACK])
    monkeypatch.setattr(mqtt_client, "socket", fake)
    c = MQTTClient("dev", "broker", user="u", password="p", keepalive=30)
    c.set_last_will("s", b"off", retain=True, qos=1)
    assert c.connect() == 0
    assert bytes(fake.sock.tx) == (
        b"\x10\x1d\x00\x04MQTT\x04\xee\x00\x1e"       # flags: user, pass, will retain, QoS 1, clean
        b"\x00\x03dev\x00\x01s\x00\x03off\x00\x01u\x00\x01p")


def test_connect_refused_and_garbage_close_the_socket(monkeypatch):
    for rx, err in (([b"\x20\x02\x00\x05"], "code 5"), ([b"\x20\xff\xff\xff\xff\x01"], "remaining"),
                    ([b"\x30\x00"], "expected CONNACK")):
        fake = FakeSocketModule(rx)
        monkeypatch.setattr(mqtt_client, "socket", fake)
        with pytest.raises(MQTTException, match=err):
            MQTTClient("dev", "broker").connect()
        assert fake.sock.closed


@pytest.mark.parametrize("size, head", [(127 - 5, b"\x32\x7f"), (128 - 5, b"\x32\x80\x01"),
                                        (16383 - 5, b"\x32\xff\x7f"), (16384 - 5, b"\x32\x80\x80\x01")])
def test_publish_remaining_length_boundaries(size, head):
    c = fz.connected()
    c.publish(b"t", b"x" * size, qos=1)
    tx = bytes(c.sock.tx)
    assert tx.startswith(head + b"\x00\x01t\x00\x01")
    assert len(tx) == len(head) + 127 - 5 + 5 + (size - (127 - 5))


def test_qos1_publish_received_is_acked_after_the_callback():
    c = fz.connected([publish_packet(b"hcp/v1/H1/1001/down", b"\x00frame", pid=0x1234)])
    assert c.check_msg() == 1
    assert c.got == [(b"hcp/v1/H1/1001/down", b"\x00frame")]
    assert bytes(c.sock.tx) == b"\x40\x02\x12\x34"


def test_packet_split_across_reads_waits_for_the_rest():
    p = publish_packet(b"t", b"y" * 200)
    c = fz.connected([p[:1], p[1:3], p[3:150], p[150:]])
    total = 0
    for _ in range(4):
        total += c.check_msg()
    assert total == 1 and c.got == [(b"t", b"y" * 200)]


def test_puback_clears_inflight_and_retry_resends_with_dup():
    c = fz.connected()
    c.retry_ms = 0
    pid = c.publish(b"t", b"m", qos=1)
    c.retry()
    assert bytes(c.sock.tx).count(b"\x3a\x06\x00\x01t") == 1     # DUP flag set on the resend
    c.sock.rx.append(b"\x40\x02" + struct.pack(">H", pid))
    c.check_msg()
    assert not c.inflight


@pytest.mark.parametrize("rx, why", [
    (b"\x30\x00", "no topic length"),                 # the reboot bug: PUBLISH shorter than 2
    (b"\x30\x01\x00", "no topic length"),
    (b"\x32\x02\x00\x00", "header needs 4"),          # QoS 1 without a packet id
    (b"\x30\x03\x00\x05a", "header needs 7"),         # topic longer than the packet
    (b"\x32\x04\x00\x00\x00\x00", "packet id 0"),
    (b"\x36\x02\x00\x00", "QoS 3"),
    (b"\x34\x04\x00\x00\x00\x01", "QoS 2"),
    (b"\x40\x01\x00", "PUBACK"),
    (b"\x40\x03\x00\x01\x00", "PUBACK"),
    (b"\x90\x02\x00\x01", "SUBACK"),
    (b"\x90\x03\x00\x01\x80", "refused"),
    (b"\xd0\x01\x00", "PINGRESP"),
    (b"\x20\x02\x00\x00", "unexpected"),
    (b"\x30\xff\xff\xff\xff\x7f", "remaining length"),
    (b"\x30\x80\x80\x80\x01", "packet of"),
])
def test_malformed_packets_are_mqtt_exceptions(rx, why):
    c = fz.connected([rx])
    with pytest.raises(MQTTException, match=why):
        c.check_msg()


# -- fuzz ------------------------------------------------------------------------------------

def valid_packets() -> list[bytes]:
    return [publish_packet(b"hcp/v1/H1/1001/down", b"\x01" * 40), publish_packet(b"t", b"", qos=0),
            b"\x40\x02\x00\x01", b"\x90\x03\x00\x01\x01", b"\xd0\x00"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def corpus(seed: int, n: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    base = valid_packets()
    out = []
    for _ in range(n):
        stream = b"".join(mutate(rng, rng.choice(base)) if rng.random() < 0.7 else rng.choice(base)
                          for _ in range(rng.randint(1, 4)))
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randint(0, 3)))
        out.append([stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if b > a])
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=5))
def test_fuzz_random_bytes_only_mqtt_or_os_errors(chunks):
    fz.outcome(chunks)          # raises if anything but MQTTException/OSError escapes


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(valid_packets()), st.integers(0, 2**32 - 1))
def test_fuzz_mutated_packets_only_mqtt_or_os_errors(packet, seed):
    fz.outcome([mutate(random.Random(seed), packet)])


def test_fuzz_corpus_same_outcomes_on_micropython(micropython):
    """The same 3,000 inputs under MicroPython: its struct and bytes raise other exceptions than
    CPython's, so the parser must hold on both; and both runtimes must agree on every outcome."""
    cases = corpus(18, 3000)
    want = fz.run_corpus(cases)
    assert want.get("mqtt_error", 0) > 1000 and want.get("ok", 0) > 100, want
    data = json.dumps([[c.hex() for c in chunks] for chunks in cases])
    out = micropython.run(
        "import json, binascii, fw_mqtt_fuzz\n"
        "cases = json.loads(open('/corpus.json').read())\n"
        "cases = [[binascii.unhexlify(c) for c in chunks] for chunks in cases]\n"
        "print('COUNTS', json.dumps(fw_mqtt_fuzz.run_corpus(cases)))\n",
        packages=("protocol", "firmware"),
        files={"/lib/fw_mqtt_fuzz.py": (HERE / "fw_mqtt_fuzz.py").read_text(),
               "/corpus.json": data})
    got = json.loads(out.split("COUNTS ", 1)[1].splitlines()[0])
    assert got == want


# -- the whole device against a rogue broker ----------------------------------------------------

class RogueBroker:
    """A TCP listener on loopback that completes CONNECT/SUBSCRIBE like a broker, then sends a
    PUBLISH of one byte (what rebooted the device before). Counts connections."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(1024)                      # CONNECT
                    conn.sendall(fz.CONNACK)
                    time.sleep(0.1)                      # SUBSCRIBE, state PUBLISH
                    conn.recv(1024)
                    conn.sendall(b"\x30\x01\x00")        # malformed PUBLISH
                    time.sleep(0.3)
                except OSError:
                    pass

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.srv.close()


def test_malformed_publish_reconnects_instead_of_rebooting(tmp_path):
    broker = RogueBroker()
    cfg = Config({"device_id": DEV, "hall": "H1", "link": "mqtt",
                  "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 10},
                  "catalogue_path": str(tmp_path / "cat.bin")})
    app = App(SimBoard(None, str(tmp_path / "j")), cfg, KEY, phrases={})
    app.uplink.connect_backoff.first = app.uplink.connect_backoff.value = 50
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and broker.connections < 3:
            app.step(app.clock.now())            # raises if the link task would have died
            time.sleep(0.005)
        assert broker.connections >= 3
        assert app.uplink.counters["link_failures"] >= 2
    finally:
        app.uplink.link.close()
        broker.stop()
