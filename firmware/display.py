"""What the 128x64 screen shows in each state. The device has no CJK font: Chinese phrases are
bitmaps rendered on the host (a "phrase pack" file, see below), the staff name comes as a bitmap
in INVITE and reason labels as bitmaps in the catalogue; the device only blits them. Without a
phrase pack a small ASCII fallback is drawn with the built-in 8x8 font.

The drawing target `fb` is the board's display: fill(c), text(s, x, y, c), fill_rect(x, y, w, h,
c), blit_mono(buf, w, h, x, y) for MONO_HLSB bitmaps, show(). `Display.screen` and
`Display.caption` name what is shown (for STATUS, the simulator and tests).

Phrase pack (`phrases.bin`): b"HCPP", u8 count, then per phrase: u8 id, u8 w, u8 h,
ceil(w/8)*h bytes MONO_HLSB. Ids and texts are in PHRASES; tools render them with a CJK font.
"""

import struct

P_RATE = 1
P_THANKS = 2
P_PAUSED = 3
P_REASON = 4
P_NEXT = 5
P_UNREGISTERED = 6
P_MAINT = 7
P_CORRUPT = 8
P_SCAN1 = 9
P_SCAN2 = 10
P_SCAN_BAD = 11
SCAN_PROMPT = "请扫描排队小票或回执二维码"     # two lines on the 128 px screen: P_SCAN1 + P_SCAN2
PHRASES = {
    P_RATE: ("请对本次服务进行评价", "PLEASE RATE"),
    P_THANKS: ("感谢您的评价", "THANK YOU"),
    P_PAUSED: ("暂停评价，请联系工作人员", "PAUSED-CALL STAFF"),
    P_REASON: ("请选择不满意的原因", "CHOOSE REASON"),
    P_NEXT: ("下一页", "5:MORE"),
    P_UNREGISTERED: ("设备未登记", "NOT REGISTERED"),
    P_MAINT: ("维护模式", "MAINTENANCE"),
    P_CORRUPT: ("存储故障，请联系工作人员", "STORAGE FAULT"),
    P_SCAN1: ("请扫描排队小票", "SCAN TICKET"),
    P_SCAN2: ("或回执二维码", "OR RECEIPT"),
    P_SCAN_BAD: ("无法识别，请重新扫描", "UNREADABLE-AGAIN"),
}
PACK_MAGIC = b"HCPP"
W = 128
H = 64


def parse_pack(data):
    """{id: (w, h, bitmap)} from a phrase pack; raises ValueError when malformed."""
    if len(data) < 5 or bytes(data[:4]) != PACK_MAGIC:
        raise ValueError("not a phrase pack")
    n = data[4]
    p = 5
    out = {}
    for _ in range(n):
        i, w, h = data[p], data[p + 1], data[p + 2]
        size = ((w + 7) // 8) * h
        if p + 3 + size > len(data):
            raise ValueError("phrase pack truncated")
        out[i] = (w, h, bytes(data[p + 3:p + 3 + size]))
        p += 3 + size
    return out


def build_pack(phrases):
    """Phrase pack bytes from {id: (w, h, bitmap)} (for tools and tests)."""
    out = bytearray(PACK_MAGIC) + bytes([len(phrases)])
    for i in sorted(phrases):
        w, h, bm = phrases[i]
        out += struct.pack("BBB", i, w, h) + bytes(bm)
    return bytes(out)


def load_pack(path):
    """The phrase pack at `path`, or {} (ASCII fallback) when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return parse_pack(f.read())
    except (OSError, ValueError):
        return {}


class Display:
    """Draws screens on `fb`."""

    def __init__(self, fb, phrases=None):
        self.fb = fb
        self.phrases = phrases if phrases is not None else {}
        self.screen = ""
        self.caption = ""
        self.draws = 0

    def _phrase(self, pid, y, center=True):
        """Draw phrase `pid` at row y; returns the height used."""
        ph = self.phrases.get(pid)
        if ph is not None:
            w, h, bm = ph
            x = (W - w) // 2 if center and w < W else 0
            self.fb.blit_mono(bm, w, h, x, y)
            return h + 2
        text = PHRASES[pid][1]
        x = (W - 8 * len(text)) // 2 if center and len(text) < 16 else 0
        self.fb.text(text, x, y, 1)
        return 10

    def _begin(self, screen, pid):
        self.screen = screen
        self.caption = PHRASES[pid][0] if pid else ""
        self.draws += 1
        self.fb.fill(0)

    def idle(self, status_line):
        """Idle: blank for the citizen, a one-line technician status at the bottom."""
        self._begin("idle", 0)
        self.fb.text(status_line, 0, H - 8, 1)
        self.fb.show()

    def invite(self, staff_no, name_bitmap, ref=None):
        """Rate screen: after an INVITE (staff name and 工号), or after a scan (`ref`: the
        scanned code, so the citizen sees which ticket or receipt they rate; its last 16
        characters when longer)."""
        self._begin("invite", P_RATE)
        y = self._phrase(P_RATE, 4)
        if name_bitmap is not None:
            w, h, bm = name_bitmap
            self.fb.blit_mono(bm, w, h, (W - w) // 2 if w < W else 0, y + 8)
            y += h + 10
        if staff_no:
            s = "No." + staff_no
            self.fb.text(s, (W - 8 * len(s)) // 2 if len(s) < 16 else 0, y + 8, 1)
        if ref:
            s = ref[-16:]
            self.fb.text(s, (W - 8 * len(s)) // 2, y + 8, 1)
        self.fb.show()

    def scan_prompt(self, status_line):
        """Waiting-area idle: ask for the queue ticket or case receipt to be scanned."""
        self._begin("scan", P_SCAN1)
        self.caption = SCAN_PROMPT
        y = self._phrase(P_SCAN1, 10)
        self._phrase(P_SCAN2, y + 10)
        self.fb.text(status_line, 0, H - 8, 1)
        self.fb.show()

    def reason(self, catalogue, page, pages):
        """Up to 4 tags, numbered 1..4 for their buttons; '5' turns the page."""
        self._begin("reason", P_REASON)
        y = self._phrase(P_REASON, 0)
        first = page * 4
        for k in range(4):
            i = first + k
            if i >= catalogue.count:
                break
            w, h, bm = catalogue.label(i)
            self.fb.text(str(k + 1), 0, y, 1)
            if w:
                self.fb.blit_mono(bm, w, h, 10, y)
            else:
                self.fb.text("#%d" % catalogue.code(i, 4), 10, y, 1)
            y += max(h, 8) + 1
        if pages > 1:
            self.fb.text("%d/%d" % (page + 1, pages), 0, H - 8, 1)
            self.fb.text("5>", W - 16, H - 8, 1)     # button 5: next page
        self.fb.show()

    def simple(self, screen, pid):
        """A one-phrase screen: thanks, paused, maintenance, corrupt, unregistered."""
        self._begin(screen, pid)
        self._phrase(pid, 24)
        self.fb.show()
