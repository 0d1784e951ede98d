"""One end of an RL1 link for one device: handshake, sealing outgoing frames, opening incoming.

    device                                   agent
      HELLO(nonce_d, ...)  seq 0, MAC K_hello  ->
                        <-  HELLO_ACK(nonce_a, time, cum, ...) seq 0, MAC K_s
      session frames, seq 1, 2, ... each way, MAC K_s

K_hello and K_s come from auth.hello_key / auth.session_key. A new HELLO starts a new session
(new nonces, new key, sequences restart), which is how a device resumes after a reconnect.

HELLO cannot be fresh by a nonce (the agent has sent nothing yet), so it carries the device's
HELLO counter (`hello_ctr`, persisted on the device, firmware/hello_counter.py): the agent end
accepts a HELLO only when its counter exceeds `hello_floor`, the highest it accepted before
(the caller loads and persists the floor). A replayed HELLO is refused (`replay`) and changes
nothing (SPEC.md §4.2, §5.3).
"""

from protocol import frame as fr
from protocol import messages as m
from protocol.auth import Hmac, hello_key, session_key, NONCE_LEN, KEY_LEN
from protocol.errors import (ProtocolError, WRONG_DEVICE, WRONG_DIRECTION, NO_SESSION, UNSIGNED,
                             REPLAY, BAD_SEQ)
from protocol.replay import ReplayWindow

DEVICE = "device"
AGENT = "agent"
# Errors a peer may send without a session (so without a MAC); they change no state.
UNSIGNED_ERRORS = (m.E_UNKNOWN_DEVICE, m.E_BAD_MAC, m.E_NO_SESSION, m.E_UNSUPPORTED)


class Session:
    """Protocol state for one device's link, on the device (role DEVICE) or agent (AGENT) side."""

    def __init__(self, device_id, device_key, role):
        if len(device_key) != KEY_LEN:
            raise ValueError("device key must be %d bytes" % KEY_LEN)
        self.device_id = device_id
        self.role = role
        self._device_key = bytes(device_key)
        self._hello = Hmac(hello_key(device_key))
        self._key = None
        self._down = role == AGENT      # direction of the frames this end sends
        self.nonce_device = None
        self.nonce_agent = None
        self.tx_seq = 0
        self.rx = ReplayWindow()
        # agent end: highest HELLO counter accepted under this key; a HELLO must exceed it
        self.hello_floor = 0

    @property
    def established(self):
        return self._key is not None

    def _start(self):
        self._key = Hmac(session_key(self._device_key, self.nonce_device, self.nonce_agent,
                                     self.device_id))
        self.tx_seq = 0
        self.rx = ReplayWindow()
        self.rx.mark(0)   # the handshake frame each way used sequence 0

    def adopt(self, nonce_device, nonce_agent):
        """Start the session both nonces define without exchanging frames (test vectors,
        benchmarks). Equivalent to having completed the handshake with these nonces."""
        self.nonce_device = bytes(nonce_device)
        self.nonce_agent = bytes(nonce_agent)
        self._start()

    # -- handshake ---------------------------------------------------------------------------
    def hello(self, nonce, fields):
        """Device: build HELLO (fields as messages.decode gives them, without `nonce`; with
        `hello_ctr` from the device's persisted counter, a new value for every HELLO)."""
        if len(nonce) != NONCE_LEN:
            raise ValueError("nonce must be %d bytes" % NONCE_LEN)
        self.nonce_device = bytes(nonce)
        self._key = None
        f = dict(fields)
        f["nonce"] = self.nonce_device
        return fr.build(m.HELLO, 0, self.device_id, 0, m.encode(m.HELLO, f), self._hello)

    def hello_ack(self, nonce, fields):
        """Agent: answer the HELLO just received; the session starts now."""
        if self.nonce_device is None:
            raise ProtocolError(NO_SESSION, "no HELLO received")
        if len(nonce) != NONCE_LEN:
            raise ValueError("nonce must be %d bytes" % NONCE_LEN)
        self.nonce_agent = bytes(nonce)
        self._start()
        f = dict(fields)
        f["nonce"] = self.nonce_agent
        return fr.build(m.HELLO_ACK, fr.FLAG_DOWN, self.device_id, 0,
                        m.encode(m.HELLO_ACK, f), self._key)

    # -- traffic -----------------------------------------------------------------------------
    def seal(self, type, fields, flags=0):
        """Build the next session frame of `type`. Returns (seq, frame bytes)."""
        if self._key is None:
            raise ProtocolError(NO_SESSION, "handshake not complete")
        self.tx_seq += 1
        if self._down:
            flags |= fr.FLAG_DOWN
        data = fr.build(type, flags, self.device_id, self.tx_seq, m.encode(type, fields), self._key)
        return self.tx_seq, data

    def error_frame(self, code, ref_seq=0):
        """An ERROR frame: signed inside a session, unsigned before one (then informational)."""
        if self._key is not None:
            return self.seal(m.ERROR, {"code": code, "ref_seq": ref_seq})[1]
        flags = fr.FLAG_DOWN if self._down else 0
        return fr.build(m.ERROR, flags, self.device_id, 0,
                        m.encode(m.ERROR, {"code": code, "ref_seq": ref_seq}))

    def open(self, data):
        """Check and decode one incoming frame. Returns (frame, type, fields).

        Raises ProtocolError with the reason it was rejected. Frames are accepted in the order
        SPEC.md §Accept rules gives: structure and CRC, direction and type, device id, MAC,
        sequence (replay), payload. A HELLO (agent) or HELLO_ACK (device) starts a session.
        """
        f = fr.parse(data)
        m.check_direction(f.type, f.downlink)
        if f.downlink == self._down:
            raise ProtocolError(WRONG_DIRECTION, "frame travels the same way this end sends")
        if f.device_id != self.device_id:
            raise ProtocolError(WRONG_DEVICE, "frame for device %d on the link of device %d"
                                % (f.device_id, self.device_id))
        if f.mac is None:
            if f.type != m.ERROR:
                raise ProtocolError(UNSIGNED, m.NAMES[f.type] + " must be signed")
            fields = m.decode(f.type, f.payload)
            if fields["code"] not in UNSIGNED_ERRORS:
                raise ProtocolError(UNSIGNED, "error code %d must be signed" % fields["code"])
            return f, f.type, fields
        if f.type == m.HELLO:
            if f.seq != 0:
                raise ProtocolError(BAD_SEQ, "HELLO with seq %d" % f.seq)
            fr.verify(f, self._hello)
            fields = m.decode(m.HELLO, f.payload)
            ctr = fields["hello_ctr"]
            if ctr <= self.hello_floor:
                # a recorded HELLO sent again: refused before it touches the session
                raise ProtocolError(REPLAY, "HELLO counter %d, already accepted %d"
                                    % (ctr, self.hello_floor))
            self.hello_floor = ctr
            self.nonce_device = fields["nonce"]
            self._key = None
            return f, f.type, fields
        if f.type == m.HELLO_ACK:
            if f.seq != 0:
                raise ProtocolError(BAD_SEQ, "HELLO_ACK with seq %d" % f.seq)
            if self.nonce_device is None:
                raise ProtocolError(NO_SESSION, "HELLO_ACK without a HELLO")
            fields = m.decode(m.HELLO_ACK, f.payload)
            key = Hmac(session_key(self._device_key, self.nonce_device, fields["nonce"],
                                   self.device_id))
            fr.verify(f, key)   # a HELLO_ACK for an older HELLO fails here
            if self._key is not None and self.nonce_agent == fields["nonce"]:
                raise ProtocolError(REPLAY, "HELLO_ACK already accepted")
            self.nonce_agent = fields["nonce"]
            self._start()
            return f, f.type, fields
        if self._key is None:
            raise ProtocolError(NO_SESSION, m.NAMES[f.type] + " before the handshake")
        fr.verify(f, self._key)
        self.rx.check(f.seq)
        fields = m.decode(f.type, f.payload)
        self.rx.mark(f.seq)
        return f, f.type, fields
