"""A small MQTT 3.1.1 client for the evaluator, modelled on micropython-lib's `umqtt.simple`
(same method names: connect, publish, subscribe, check_msg, ping, disconnect, set_last_will,
set_callback) with two differences the device needs:

- Non-blocking: check_msg() reads whatever bytes have arrived and processes every complete
  packet, never waiting; publish() does not wait for PUBACK. umqtt.simple blocks in publish()
  until the PUBACK comes and in wait_msg(), which would stall the buttons and the screen
  under asyncio.
- QoS 1 both ways with bookkeeping: outgoing QoS 1 publishes stay in `inflight` until their
  PUBACK and are resent with DUP after `retry_ms`; incoming QoS 1 publishes are PUBACKed after
  the callback took them; duplicates are passed on (RL1's replay window and rseq dedup make them
  harmless).

Works on MicroPython (usocket/socket) and CPython (socket). Only what RL1 needs: no QoS 2, no
TLS (the hall network; broker ACLs per device), one subscription.
"""

import struct
import time

from firmware.clock import ticks_ms as _ticks, ticks_diff as _diff

try:
    import socket
except ImportError:  # pragma: no cover - a port without sockets
    socket = None

MAX_PACKET = 1024         # larger incoming packets are a protocol error (RL1 frames <= 254)
_EAGAIN = (11, 35, 115, 119)  # EAGAIN / EWOULDBLOCK / EINPROGRESS values across ports


class MQTTException(OSError):
    """The broker refused us or spoke something we don't understand (an OSError, so the link
    treats it like a broken connection: close, back off, reconnect)."""


def _str(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def _remaining(n):
    out = bytearray()
    while True:
        d = n & 0x7F
        n >>= 7
        if n:
            out.append(d | 0x80)
        else:
            out.append(d)
            return bytes(out)


class MQTTClient:
    def __init__(self, client_id, server, port=1883, user=None, password=None, keepalive=30,
                 retry_ms=5000, write_timeout_s=5):
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user or None
        self.password = password or None
        self.keepalive = keepalive
        self.retry_ms = retry_ms
        self.write_timeout_s = write_timeout_s
        self.sock = None
        self.cb = None
        self.pid = 0
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self.inflight = {}      # pid -> [topic, msg, retain, sent_at]
        self.subscribed = {}    # pid -> granted QoS (after SUBACK)
        self._rx = bytearray()
        self.last_rx = 0
        self.last_tx = 0
        self.resent = 0

    def set_callback(self, f):
        """f(topic bytes, msg bytes) for every PUBLISH received."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    # -- socket ----------------------------------------------------------------------------
    def _write(self, data):
        s = self.sock
        if s is None:
            raise OSError("not connected")
        s.settimeout(self.write_timeout_s)
        try:
            mv = memoryview(data)
            while len(mv):
                n = s.send(mv)
                if not n:
                    raise OSError("connection closed")
                mv = mv[n:]
        finally:
            s.settimeout(0)
        self.last_tx = _ticks()

    def _read_available(self):
        """Append whatever has arrived to the rx buffer (never waits)."""
        s = self.sock
        if s is None:
            raise OSError("not connected")
        for _ in range(8):
            try:
                data = s.recv(512)
            except OSError as e:
                if e.args and e.args[0] in _EAGAIN:
                    return
                raise
            if data is None:
                return
            if not data:
                raise OSError("connection closed by broker")
            self._rx.extend(data)
            self.last_rx = _ticks()
            if len(self._rx) > MAX_PACKET * 4:
                raise MQTTException("too much unprocessed input")

    def _packet(self):
        """(type byte, body) of the next complete packet in the rx buffer, or None.
        A malformed length raises MQTTException (never IndexError or struct.error)."""
        rx = self._rx
        if len(rx) < 2:
            return None
        n = 0
        shift = 0
        i = 1
        while True:
            if i >= len(rx):
                return None
            b = rx[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:         # MQTT allows at most 4 length bytes
                raise MQTTException("bad remaining length")
        if n > MAX_PACKET:
            raise MQTTException("packet of %d bytes" % n)
        if len(rx) < i + n:
            return None
        op = rx[0]
        body = bytes(rx[i:i + n])
        self._rx = rx[i + n:]
        return op, body

    # -- session ---------------------------------------------------------------------------
    def connect(self, clean_session=True, timeout_s=5):
        """Open the TCP connection and complete CONNECT/CONNACK (waits at most timeout_s).
        Returns the session-present flag. Raises OSError / MQTTException."""
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        s = socket.socket()
        s.settimeout(timeout_s)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            raise
        self.sock = s
        self._rx = bytearray()
        flags = 0x02 if clean_session else 0
        payload = _str(self.client_id)
        if self.lw_topic:
            flags |= 0x04 | (self.lw_qos << 3) | (0x20 if self.lw_retain else 0)
            payload += _str(self.lw_topic) + _str(self.lw_msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        var = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack(">H", self.keepalive)
        self._write(b"\x10" + _remaining(len(var) + len(payload)) + var + payload)
        start = _ticks()
        while True:
            try:
                self._read_available()
                p = self._packet()
            except OSError:
                self.close()
                raise
            if p is not None:
                break
            if _diff(_ticks(), start) > timeout_s * 1000:
                self.close()
                raise OSError("no CONNACK from broker")
            time.sleep(0.01)
        op, body = p
        if op != 0x20 or len(body) != 2:
            self.close()
            raise MQTTException("expected CONNACK")
        if body[1] != 0:
            self.close()
            raise MQTTException("broker refused connection (code %d)" % body[1])
        self.inflight = {}
        self.last_rx = _ticks()
        return body[0] & 1

    def close(self):
        """Drop the TCP connection without DISCONNECT (the broker publishes the will)."""
        s = self.sock
        self.sock = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def disconnect(self):
        """Clean DISCONNECT (the will is NOT published), then close."""
        try:
            self._write(b"\xe0\x00")
        except OSError:
            pass
        self.close()

    def ping(self):
        self._write(b"\xc0\x00")

    # -- messages --------------------------------------------------------------------------
    def _publish_packet(self, topic, msg, retain, qos, pid, dup):
        head = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
        var = _str(topic)
        if qos:
            var += struct.pack(">H", pid)
        return bytes([head]) + _remaining(len(var) + len(msg)) + var + msg

    def publish(self, topic, msg, retain=False, qos=0):
        """Send a PUBLISH. QoS 1: returns its packet id; it stays in `inflight` until PUBACK
        (resent with DUP by retry()). Does not wait."""
        pid = self._next_pid() if qos else 0
        self._write(self._publish_packet(topic, msg, retain, qos, pid, False))
        if qos:
            self.inflight[pid] = [topic, msg, retain, _ticks()]
        return pid

    def subscribe(self, topic, qos=1):
        """Send SUBSCRIBE; the SUBACK is processed by check_msg (see `subscribed`)."""
        pid = self._next_pid()
        var = struct.pack(">H", pid) + _str(topic) + bytes([qos])
        self._write(b"\x82" + _remaining(len(var)) + var)
        return pid

    def retry(self):
        """Resend QoS 1 publishes whose PUBACK is overdue (with the DUP flag)."""
        now = _ticks()
        for pid in list(self.inflight):
            e = self.inflight[pid]
            if _diff(now, e[3]) >= self.retry_ms:
                self._write(self._publish_packet(e[0], e[1], e[2], 1, pid, True))
                e[3] = now
                self.resent += 1

    def check_msg(self):
        """Process every complete packet that has arrived; never waits. Returns how many.
        Anything malformed raises MQTTException, so the link reconnects; no other exception
        may escape for bytes the broker (or anyone on the LAN) sent."""
        self._read_available()
        n = 0
        while True:
            p = self._packet()
            if p is None:
                return n
            n += 1
            op, body = p
            t = op & 0xF0
            if t == 0x30:
                self._on_publish(op, body)
            elif t == 0x40:                             # PUBACK
                if op != 0x40 or len(body) != 2:
                    raise MQTTException("malformed PUBACK")
                self.inflight.pop((body[0] << 8) | body[1], None)
            elif t == 0x90:                             # SUBACK
                if op != 0x90 or len(body) < 3:
                    raise MQTTException("malformed SUBACK")
                if body[2] == 0x80:
                    raise MQTTException("subscription refused by broker (ACL?)")
                self.subscribed[(body[0] << 8) | body[1]] = body[2]
            elif t == 0xD0:                             # PINGRESP
                if op != 0xD0 or body:
                    raise MQTTException("malformed PINGRESP")
            else:
                raise MQTTException("unexpected packet 0x%02x" % op)

    def _on_publish(self, op, body):
        # Every length is checked before it is used: a short PUBLISH must be an MQTTException
        # (reconnect), never an IndexError/struct.error that would kill the link task.
        qos = (op >> 1) & 3
        if qos == 3:
            raise MQTTException("malformed PUBLISH (QoS 3)")
        if qos == 2:
            raise MQTTException("QoS 2 is not supported")
        size = len(body)
        if size < 2:
            raise MQTTException("malformed PUBLISH (no topic length)")
        tlen = (body[0] << 8) | body[1]
        p = 2 + tlen
        if qos:
            p += 2
        if p > size:
            raise MQTTException("malformed PUBLISH (%d bytes, header needs %d)" % (size, p))
        topic = body[2:2 + tlen]
        pid = (body[p - 2] << 8) | body[p - 1] if qos else 0
        if qos and pid == 0:
            raise MQTTException("malformed PUBLISH (packet id 0)")
        if self.cb is not None:
            self.cb(topic, body[p:])
        if qos == 1:
            self._write(b"\x40\x02" + struct.pack(">H", pid))
