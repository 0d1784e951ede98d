"""The one exception type RL1 decoders raise, with a stable reason code.

Reason codes are short strings so they can label metrics ("frames rejected by reason") directly.
SPEC.md §10 lists them; keep the two in step.
"""

TRUNCATED = "truncated"          # fewer bytes than the header or its length field promise
OVERSIZE = "oversize"            # more than MAX_FRAME bytes (or an encoded frame over the limit)
BAD_COBS = "bad_cobs"            # COBS code byte points past the end / zero inside a frame
BAD_CRC = "bad_crc"
BAD_VERSION = "bad_version"
BAD_FLAGS = "bad_flags"          # a reserved flag bit is set
BAD_LENGTH = "bad_length"        # bytes after the CRC the length field does not account for
BAD_TYPE = "bad_type"            # unknown message type
WRONG_DIRECTION = "wrong_direction"  # type not allowed in the direction the flag says
UNSIGNED = "unsigned"            # a frame that must carry a MAC does not
BAD_MAC = "bad_mac"
REPLAY = "replay"                # sequence already seen or older than the replay window
WRONG_DEVICE = "wrong_device"    # device id does not match the session / key / topic
NO_SESSION = "no_session"        # a session frame arrived before the handshake completed
BAD_PAYLOAD = "bad_payload"      # payload fields out of range or too short for the type
BAD_SEQ = "bad_seq"              # a handshake frame (HELLO, HELLO_ACK) whose seq is not 0

REASONS = (TRUNCATED, OVERSIZE, BAD_COBS, BAD_CRC, BAD_VERSION, BAD_FLAGS, BAD_LENGTH, BAD_TYPE,
           WRONG_DIRECTION, UNSIGNED, BAD_MAC, REPLAY, WRONG_DEVICE, NO_SESSION, BAD_PAYLOAD,
           BAD_SEQ)


class ProtocolError(Exception):
    """A frame or message was rejected. `reason` is one of REASONS; `detail` is for humans."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        if self.detail:
            return self.reason + ": " + self.detail
        return self.reason
