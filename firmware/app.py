"""The evaluator application: wires board, journal, flow, display, links and watchdog, and runs
one asyncio task per concern (buttons, UI, link, watchdog).

Every task body is a synchronous method taking `now` (ms) -- sample_buttons(), ui(), link(),
watch() -- so tests and the simulator can drive the app step by step with a clock of their own;
run() wraps them in asyncio loops on the device.

The press path (debounce -> flow -> journal append) allocates no objects: the record is packed
with struct.pack_into straight into the journal's preallocated payload buffer.
"""

from protocol import messages as m
from protocol.session import Session, DEVICE
from firmware import catalogue as catmod
from firmware import flow as fl
from firmware import ratings
from firmware.buttons import Debouncer
from firmware.clock import Clock
from firmware.config import COUNTER_PATH
from firmware.display import (Display, load_pack, P_PAUSED, P_THANKS, P_CORRUPT, P_MAINT,
                              P_SCAN_BAD)
from firmware.hello_counter import HelloCounter
from firmware.journal import Journal, JournalFull, JournalCorrupt
from firmware.links.uplink import Uplink, UP
from firmware.watchdog import Watchdog, HB_BUTTONS, HB_UI, HB_LINK

BUTTON_PERIOD_MS = 5
UI_PERIOD_MS = 20
LINK_PERIOD_MS = 10
WATCH_PERIOD_MS = 1000
IDLE_REFRESH_MS = 1000
PULSE_MS = 500
BEEP_MS = 80
ALL_LEDS = 0x1F
# Timers are ms since boot: small ints for 2**30 ms (12.4 days), after that every timer
# operation would allocate. So the device restarts itself before then: after RESTART_AFTER_MS
# of uptime, while idle, at night (02:00-05:00 hall time) when it knows the time, and at the
# first idle moment after RESTART_LATEST_MS whatever the hour. The journal is durable at every
# instant, so a restart loses nothing; the agent sees one new HELLO.
RESTART_AFTER_MS = 10 * 86400 * 1000
RESTART_LATEST_MS = 12 * 86400 * 1000
RESTART_CHECK_MS = 60000
HALL_UTC_OFFSET_S = 8 * 3600    # China Standard Time, no daylight saving


class _NoJournal:
    """Stands in when the journal could not be opened (corrupt): holds nothing, takes nothing."""
    acked = 0
    next_rseq = 1
    boot_count = 0
    capacity = 0

    def low(self):
        return 1

    def unacked(self):
        return 0

    def is_full(self):
        return True

    def read(self, rseq):
        return None

    def ack(self, cum):
        return 0


def payload_size(cfg):
    """Journal payload of this device's role: waiting-area records carry the scanned reference."""
    return ratings.REF_PAYLOAD_SIZE if cfg.waiting_area else ratings.PAYLOAD_SIZE


def open_journal(root, capacity, fs=None, size=ratings.PAYLOAD_SIZE):
    """(journal, error): the journal in `root`, or (None, exception) when it is corrupt or the
    filesystem under it fails (littlefs EIO/EILSEQ on a damaged block). Reported, never
    reformatted (a technician decides)."""
    try:
        return Journal(root, size, capacity=capacity, fs=fs), None
    except (JournalCorrupt, OSError) as e:
        return None, e


class App:
    """One evaluator. `journal`, `link`, `clock` and `counter` (the HELLO counter) may be given
    (tests, simulator); otherwise they are made from the board and the config."""

    def __init__(self, board, cfg, key, journal=None, link=None, clock=None, phrases=None,
                 counter=None):
        self.board = board
        self.cfg = cfg
        self.clock = clock if clock is not None else Clock()
        self.journal_error = None
        if journal is None:
            try:
                root = board.journal_root()
            except OSError as e:          # partition missing or unmountable: report it
                root = None
                self.journal_error = e
            if root is not None:
                journal, self.journal_error = open_journal(root, cfg["journal"]["capacity"],
                                                           size=payload_size(cfg))
        self.journal = journal
        self.corrupt = journal is None
        j = journal if journal is not None else _NoJournal()
        self._j = j
        cat = catmod.load(cfg["catalogue_path"])
        self.flow = fl.Flow(cfg.tunables(), cat)
        self.debouncer = Debouncer()
        self.waiting_area = cfg.waiting_area
        self.scanner = board.scanner(cfg) if self.waiting_area else None
        if phrases is None:
            phrases = load_pack("phrases.bin")
        self.display = Display(board.fb, phrases)
        if link is None:
            link = make_link(board, cfg, j.boot_count)
        if counter is None:
            counter = HelloCounter(board.flash_path(COUNTER_PATH))
        self.counter = counter
        self.session = Session(cfg.device_id, key, DEVICE)
        self.uplink = Uplink(link, self.session, j, self.clock, self, counter,
                             session_timeout_ms=cfg["session_timeout_s"] * 1000,
                             status_interval_ms=cfg["status_interval_s"] * 1000)
        self.watchdog = Watchdog(None)
        self.dirty = True
        self._idle_at = 0
        self._restart_checked = 0
        self._idle_line = ""
        self._leds = -1
        self.refused = 0          # ratings refused (journal full / flash error)
        now = self.clock.now()
        if self.corrupt or j.is_full():
            self._effects(self.flow.set_paused(True, now), now)

    # -- task bodies -----------------------------------------------------------------------
    def sample_buttons(self, now):
        """Press path: raw sample -> debounce -> flow -> (journal append). A waiting-area
        evaluator's scanner is read here too: a scan is an input like a press."""
        sc = self.scanner
        if sc is not None:
            n = sc.poll()
            if n:
                self._effects(self.flow.scanned(sc.code, n, now), now)
        pressed = self.debouncer.update(self.board.buttons(), now)
        if pressed:
            b = 1
            while pressed:
                if pressed & 1:
                    self._effects(self.flow.press(b, now), now)
                pressed >>= 1
                b += 1
        self.watchdog.beat(HB_BUTTONS, now)

    def ui(self, now):
        """Timers of the flow, the screen and the LEDs."""
        self._effects(self.flow.tick(now), now)
        f = self.flow
        if f.state == fl.IDLE and now - self._idle_at >= IDLE_REFRESH_MS:
            self._idle_at = now
            line = self._status_line()
            if line != self._idle_line:
                self._idle_line = line
                self.dirty = True
        if self.dirty:
            self.dirty = False
            self._draw()
        self._set_leds(now)
        self.watchdog.beat(HB_UI, now)
        if now - self._restart_checked >= RESTART_CHECK_MS:
            self._restart_checked = now
            if self.restart_due(now):
                self.board.restart()

    def restart_due(self, now):
        """True when the maintenance restart should happen now (see RESTART_AFTER_MS)."""
        if now < RESTART_AFTER_MS or self.flow.state != fl.IDLE:
            return False
        if now >= RESTART_LATEST_MS:
            return True
        if not self.clock.synced:
            return False
        hour = (self.clock.wall(now) + HALL_UTC_OFFSET_S) // 3600 % 24
        return 2 <= hour < 5

    def link(self, now):
        self.uplink.step(now)
        self.watchdog.beat(HB_LINK, now)

    def watch(self, now):
        return self.watchdog.check(now)

    def step(self, now):
        """Everything once (tests and the simulator)."""
        self.sample_buttons(now)
        self.ui(now)
        self.link(now)

    # -- asyncio ---------------------------------------------------------------------------
    async def _loop(self, body, period):
        from firmware.aio import sleep_ms
        clock = self.clock
        while True:
            body(clock.now())
            await sleep_ms(period)

    async def run(self, watchdog_ms=8000):
        """Run forever on the device: one task per concern, then the watchdog feeder."""
        import asyncio
        from firmware.aio import sleep_ms
        now = self.clock.now()
        self.watchdog = Watchdog(self.board.start_watchdog(watchdog_ms), max_age_ms=watchdog_ms // 2)
        self.watchdog.start(now)
        asyncio.create_task(self._loop(self.sample_buttons, BUTTON_PERIOD_MS))
        asyncio.create_task(self._loop(self.ui, UI_PERIOD_MS))
        asyncio.create_task(self._loop(self.link, LINK_PERIOD_MS))
        while True:
            self.watch(self.clock.now())
            await sleep_ms(WATCH_PERIOD_MS)

    # -- effects of the flow ---------------------------------------------------------------
    def _effects(self, e, now):
        if e & fl.E_COMMIT:
            e |= self._commit(now)
        if e & fl.E_BEEP:
            self.board.beep(BEEP_MS)
        if e & fl.E_REDRAW:
            self.dirty = True
        if e & fl.E_STATUS:
            self.uplink.request_status()

    def _commit(self, now):
        """Append the flow's rating to the journal; THANKS only once append() returned."""
        f = self.flow
        j = self.journal
        if j is None:
            self.refused += 1
            return f.refused(now)
        clock = self.clock
        flags = f.rec_flags
        if clock.synced:
            clock.split_wall(f.rec_at)
        else:
            clock.split_uptime(f.rec_at)
            flags |= m.REC_CLOCK_UNSYNCED
        rseq = j.next_rseq
        ratings.pack_into(j.payload_buffer, rseq, clock.hi, clock.lo, f.rec_invite, f.rec_cat,
                          f.rec_level, flags, f.rec_reason, j.boot_count)
        if j.payload_size > ratings.PAYLOAD_SIZE:
            # the reference goes into the same append as the rating: both or neither survive
            ratings.pack_ref_into(j.payload_buffer, f.ref, f.rec_ref_len)
        try:
            got = j.append()
        except JournalFull:
            self.refused += 1
            return f.refused(now)
        except OSError:
            try:                          # the journal rewrites the same slot: try once more,
                j.reclaim()               # after freeing an acked last segment (flash full)
                got = j.append()
            except (OSError, JournalFull):
                self.refused += 1
                return f.refused(now)
        if got != rseq:
            raise AssertionError("journal gave rseq %d, record says %d" % (got, rseq))
        e = f.committed(now)
        if j.is_full():
            e |= f.set_paused(True, now)
        return e

    # -- host interface for the uplink -----------------------------------------------------
    def status_fields(self, now):
        st = 0
        if self.clock.synced:
            st |= m.ST_CLOCK_SYNCED
        if self.corrupt:
            st |= m.ST_JOURNAL_CORRUPT
        elif self._j.is_full():
            st |= m.ST_JOURNAL_FULL
        cat = self.flow.catalogue
        return {"status": st, "ui_state": self.flow.ui_state(),
                "cat_version": cat.version if cat is not None else 0}

    def on_invite(self, fields, now):
        bm = None
        if fields["name_w"]:
            bm = (fields["name_w"], fields["name_h"], fields["name_bitmap"])
        self._effects(self.flow.invite(fields["invite_id"], fields["lifetime"], now,
                                       fields["staff_no"], bm), now)

    def on_cancel(self, invite_id, now):
        self._effects(self.flow.cancel(invite_id, now), now)

    def on_time(self, first_sync, now):
        if first_sync:
            self.uplink.request_status()

    def on_catalogue(self, cat, now):
        try:
            catmod.save(self.cfg["catalogue_path"], cat)
        except OSError:
            pass      # still used until reboot; the agent resends it after the next HELLO
        self._effects(self.flow.set_catalogue(cat), now)

    def on_acked(self, now):
        if self.flow.paused and not self.corrupt and not self._j.is_full():
            self._effects(self.flow.set_paused(False, now), now)

    def on_error(self, code, now):
        self.dirty = self.dirty or self.flow.state == fl.IDLE

    def on_journal_error(self, exc, now):
        self.corrupt = True
        self.journal_error = exc
        self._effects(self.flow.set_paused(True, now), now)
        self.uplink.request_status()

    # -- screen ----------------------------------------------------------------------------
    def _status_line(self):
        u = self.uplink
        s = "%d %s Q%d" % (self.cfg.device_id, ("DOWN", "HELO", "UP")[u.state], self._j.unacked())
        if u.last_error == m.E_UNKNOWN_DEVICE and u.state != UP:
            s += " UNREG"
        if not self.clock.synced:
            s += " T?"
        if self.counter.damaged:      # HELLOs will be refused: a technician re-provisions
            s += " CTR!"
        return s

    def _draw(self):
        f = self.flow
        d = self.display
        s = f.state
        if s == fl.INVITED:
            d.invite(f.staff_no, f.name_bitmap,
                     bytes(f.ref[:f.ref_len]).decode() if f.scanning else None)
        elif s == fl.REASON:
            d.reason(f.catalogue, f.page, f.pages())
        elif s == fl.THANKS:
            d.simple("thanks", P_THANKS)
        elif s == fl.PAUSED:
            if self.corrupt:
                d.simple("corrupt", P_CORRUPT)
            else:
                d.simple("paused", P_PAUSED)
        elif s == fl.MAINTENANCE:
            d.simple("maintenance", P_MAINT)
        elif s == fl.IDLE and self.waiting_area:
            if f.scan_error:
                d.simple("scan_bad", P_SCAN_BAD)
            else:
                d.scan_prompt(self._idle_line or self._status_line())
        elif s == fl.IDLE:
            d.idle(self._idle_line or self._status_line())

    def _set_leds(self, now):
        f = self.flow
        s = f.state
        mask = 0
        if s == fl.INVITED:
            if ((now - f.shown_at) // PULSE_MS) & 1 == 0:
                mask = ALL_LEDS
        elif s == fl.REASON:
            left = f.tag_count() - f.page * fl.TAGS_PER_PAGE
            if left > 4:
                left = 4
            mask = (1 << left) - 1
            if f.pages() > 1:
                mask |= 0x10
        if mask != self._leds:
            self._leds = mask
            self.board.leds(mask)


def make_link(board, cfg, boot):
    """The data link the config names: serial on the board's data UART, or MQTT."""
    if cfg["link"] == "mqtt":
        from firmware.links.mqtt_link import MqttLink
        board.net_up(cfg)
        mq = cfg["mqtt"]
        return MqttLink(cfg["hall"], cfg.device_id, mq["host"], mq["port"], boot,
                        user=mq["user"], password=mq["password"], keepalive=mq["keepalive"])
    from firmware.links.serial_link import SerialLink
    return SerialLink(board.data_stream(cfg))
