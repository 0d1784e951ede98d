"""The citizen's side of the evaluator as an explicit state machine. Pure: every method takes
the time (`now_ms`, a monotonic millisecond count) and returns effects as an int bitmask; no I/O,
no clock reads, no allocation in the press path.

States (ui_state codes are the ones STATUS reports, SPEC §4.6):

    IDLE ──INVITE──▶ INVITED ──level 1..3──────────────▶ COMMIT ──append ok──▶ THANKS ──▶ IDLE
      │                │  └──level 4..5──▶ REASON ──tag / timeout──▶ COMMIT       (thanks_ms)
      │                └──lifetime over / CANCEL──▶ IDLE
      ├──press (unsolicited allowed)──▶ as INVITED, with invite 0 and REC_UNSOLICITED
      └──scan (waiting area)──▶ INVITED, invite 0, the scanned reference kept for the record
    any ──journal full / corrupt──▶ PAUSED ──space freed──▶ IDLE

A waiting-area evaluator (Tunables.scan) has no window and gets no invitations: its IDLE screen
asks for the queue ticket or case receipt to be scanned (请扫描排队小票或回执二维码); a scan
opens the rating exactly as an invitation would, with the scanned code in `ref[:ref_len]`; a
press with nothing scanned is ignored (it would be evidence of nothing). An unreadable scan
shows 无法识别，请重新扫描 for `scan_error_ms`.

The app performs COMMIT (the journal append) and reports back with committed() or refused();
THANKS is shown only after the append returned. The record's fields wait in `rec_*` attributes.
"""

from protocol.messages import REC_REASON_TIMEOUT, REC_TOO_FAST, REC_UNSOLICITED, MAX_REF

# ui states (STATUS ui_state values; COMMIT is reported as its predecessor's "invited")
IDLE = 0
INVITED = 1
REASON = 2
THANKS = 3
PAUSED = 4
MAINTENANCE = 5
COMMIT = 6          # internal: waiting for the journal append to return
STATE_NAMES = ("idle", "invited", "reason", "thanks", "paused", "maintenance", "commit")

# effects (bitmask returned by every method)
E_REDRAW = 1        # the screen / LEDs must be redrawn
E_COMMIT = 2        # append the rating in rec_* to the journal now, then call committed()
E_BEEP = 4          # one short beep
E_STATUS = 8        # something a technician cares about changed: send STATUS

TAGS_PER_PAGE = 4   # buttons 1..4 pick a tag, button 5 turns the page


class Tunables:
    """Timing and policy knobs of the flow (config.py fills them from the device config)."""

    def __init__(self, reason_timeout_ms=30000, thanks_ms=3000, too_fast_ms=300,
                 unsolicited=True, default_lifetime_s=120, scan=False, scan_lifetime_s=60,
                 scan_error_ms=3000):
        self.reason_timeout_ms = reason_timeout_ms
        self.thanks_ms = thanks_ms
        self.too_fast_ms = too_fast_ms
        self.unsolicited = unsolicited
        self.default_lifetime_s = default_lifetime_s
        self.scan = scan                        # waiting-area evaluator: rate after a scan
        self.scan_lifetime_s = scan_lifetime_s  # how long a scanned rating waits for a press
        self.scan_error_ms = scan_error_ms      # how long "unreadable, scan again" shows


class Flow:
    """Citizen flow. `catalogue` (catalogue.Catalogue or None) supplies the reason tags."""

    def __init__(self, tunables=None, catalogue=None):
        self.t = tunables if tunables is not None else Tunables()
        self.catalogue = catalogue
        self.state = IDLE
        self.until = 0             # deadline of the current state (INVITED, REASON, THANKS)
        self.shown_at = 0          # when the current invitation appeared
        self.invite_id = 0         # invitation showing (0 in IDLE or for an unsolicited press)
        self.staff_no = ""
        self.name_bitmap = None    # (w, h, bytes) of the staff name, or None
        self.page = 0              # reason page
        self._paused = False
        # the next invitation, when one arrives while a rating is still in progress
        self._next_id = 0
        self._next_life = 0
        self._next_staff = ""
        self._next_bitmap = None
        # recent invitation ids: INVITE is retransmitted, an answered one must not reappear
        self._seen = [0] * 8
        self._seen_i = 0
        # the rating being committed
        self.rec_level = 0
        self.rec_invite = 0
        self.rec_flags = 0
        self.rec_reason = 0
        self.rec_cat = 0
        self.rec_at = 0            # when the level was pressed (the record's time)
        self._commit_ui = IDLE     # the screen COMMIT came from
        self.committed_count = 0
        self.ignored = 0           # presses ignored (after commit, while paused, ...)
        # waiting area: the scanned reference (preallocated; the press path copies from it)
        self.scanning = False      # INVITED because of a scan (not an INVITE)
        self.ref = bytearray(MAX_REF)
        self.ref_len = 0
        self.rec_ref_len = 0       # reference length of the rating being committed (0: none)
        self.scan_error = False    # showing "unreadable, scan again"
        self._error_until = 0

    # -- inputs from the agent -------------------------------------------------------------
    def invite(self, invite_id, lifetime_s, now_ms, staff_no="", name_bitmap=None):
        """An INVITE arrived. Idempotent by invite_id (the agent may resend it)."""
        if invite_id == 0 or invite_id == self.invite_id or invite_id == self._next_id \
                or self._was_seen(invite_id):
            return 0
        if lifetime_s <= 0:
            lifetime_s = self.t.default_lifetime_s
        if self.state in (IDLE, INVITED) and not self._paused:
            if self.state == INVITED:
                self._remember(self.invite_id)   # superseded: a new case replaced it
            return self._show(invite_id, lifetime_s, staff_no, name_bitmap, now_ms)
        # a rating is in progress (or paused): show this one when it is done
        self._next_id = invite_id
        self._next_life = lifetime_s
        self._next_staff = staff_no
        self._next_bitmap = name_bitmap
        return 0

    def cancel(self, invite_id, now_ms):
        """CANCEL: close the invitation if it is still waiting for a press. Once a level has
        been pressed the rating belongs to the citizen and is completed (never dropped)."""
        if invite_id == self._next_id:
            self._next_id = 0
            self._remember(invite_id)
            return 0
        if self.state == INVITED and self.invite_id == invite_id:
            self._remember(invite_id)
            self._to_idle(now_ms)
            return E_REDRAW
        self._remember(invite_id)
        return 0

    def set_catalogue(self, catalogue):
        """Install a new reason catalogue (takes effect for the next reason screen)."""
        self.catalogue = catalogue
        return E_STATUS

    def set_paused(self, paused, now_ms):
        """Journal full or corrupt (True) / space freed (False). Ratings are refused visibly."""
        if paused == self._paused:
            return 0
        self._paused = paused
        if paused:
            if self.state in (REASON, COMMIT, THANKS):
                return E_STATUS     # finish this rating's screens; PAUSED follows
            if self.state == INVITED:
                # the invitation can't be answered now: keep it for later, unanswered
                self._next_id = self.invite_id
                self._next_life = (self.until - now_ms + 999) // 1000
                self._next_staff = self.staff_no
                self._next_bitmap = self.name_bitmap
            self.state = PAUSED
            self.invite_id = 0
            return E_REDRAW | E_STATUS
        if self.state == PAUSED:
            self._to_idle(now_ms)
            return E_REDRAW | E_STATUS | self._show_next(now_ms)
        return E_STATUS

    @property
    def paused(self):
        return self._paused

    # -- input from the citizen ------------------------------------------------------------
    def scanned(self, code, n, now_ms):
        """The scanner read a line (waiting area): n > 0 is a code in code[:n], n < 0 a line
        that is no usable code. A code opens the rating for it, replacing an earlier scan that
        nobody rated yet; during a rating (reason, commit, thanks) or while paused the scan is
        ignored, so a rating's reference never changes under it."""
        if not self.t.scan:
            return 0
        s = self.state
        if self._paused or s == REASON or s == COMMIT or s == THANKS or s == PAUSED:
            self.ignored += 1
            return 0
        if n < 0:
            self._to_idle(now_ms)
            self.scan_error = True
            self._error_until = now_ms + self.t.scan_error_ms
            return E_REDRAW | E_BEEP
        if n > MAX_REF:
            n = MAX_REF
        ref = self.ref
        for i in range(n):
            ref[i] = code[i]
        self.ref_len = n
        self.scan_error = False
        self._show(0, self.t.scan_lifetime_s, "", None, now_ms)
        self.scanning = True
        return E_REDRAW | E_BEEP

    def press(self, button, now_ms):
        """Button 1..5 was pressed (debounced)."""
        s = self.state
        if s == INVITED:
            return self._level(button, self.invite_id, 0, now_ms)
        if s == IDLE:
            if not self.t.unsolicited or self._paused:
                self.ignored += 1
                return 0
            return self._level(button, 0, REC_UNSOLICITED, now_ms)
        if s == REASON:
            return self._reason_press(button, now_ms)
        self.ignored += 1        # COMMIT, THANKS, PAUSED: one rating per invitation
        return 0

    # -- time ------------------------------------------------------------------------------
    def tick(self, now_ms):
        """Advance timers: invitation lifetime, reason timeout, end of the thanks screen."""
        s = self.state
        if self.scan_error and now_ms - self._error_until >= 0:
            self.scan_error = False
            if s == IDLE:
                return E_REDRAW
        if s == INVITED and now_ms - self.until >= 0:
            self._remember(self.invite_id)      # expired unanswered: nothing is recorded
            self._to_idle(now_ms)
            return E_REDRAW | self._show_next(now_ms)
        if s == REASON and now_ms - self.until >= 0:
            self.rec_flags |= REC_REASON_TIMEOUT    # the level stands, without a reason
            self.rec_reason = 0
            self._commit_ui = REASON
            self.state = COMMIT
            return E_COMMIT
        if s == THANKS and now_ms - self.until >= 0:
            if self._paused:
                self.state = PAUSED
                return E_REDRAW | E_STATUS
            self._to_idle(now_ms)
            return E_REDRAW | self._show_next(now_ms)
        return 0

    # -- results of the app's journal append -----------------------------------------------
    def committed(self, now_ms):
        """The record is durable in the journal: thank the citizen."""
        self.committed_count += 1
        self.state = THANKS
        self.until = now_ms + self.t.thanks_ms
        return E_REDRAW

    def refused(self, now_ms):
        """The append failed (journal full or flash error): the rating was NOT accepted, and
        the screen says so (PAUSED) instead of thanking."""
        self._paused = True
        self.state = PAUSED
        self.invite_id = 0
        return E_REDRAW | E_STATUS

    # -- what the screen needs -------------------------------------------------------------
    def ui_state(self):
        """STATUS ui_state code (COMMIT counts as the screen it came from)."""
        if self.state == COMMIT:
            return self._commit_ui
        return self.state

    def tag_count(self):
        c = self.catalogue
        return c.count if c is not None else 0

    def pages(self):
        n = self.tag_count()
        return (n + TAGS_PER_PAGE - 1) // TAGS_PER_PAGE

    def next_deadline(self):
        """When tick() next has something to do (ms), or -1."""
        if self.state in (INVITED, REASON, THANKS):
            return self.until
        return -1

    # -- internals -------------------------------------------------------------------------
    def _level(self, level, invite_id, flags, now_ms):
        if level < 1 or level > 5:
            self.ignored += 1
            return 0
        if (invite_id or self.scanning) and now_ms - self.shown_at < self.t.too_fast_ms:
            flags |= REC_TOO_FAST
        self.rec_ref_len = self.ref_len if self.scanning else 0
        self.rec_level = level
        self.rec_invite = invite_id
        self.rec_flags = flags
        self.rec_reason = 0
        self.rec_at = now_ms
        cat = self.catalogue
        self.rec_cat = cat.version if cat is not None else 0
        if invite_id:
            self._remember(invite_id)           # answered: a resent INVITE is ignored
        if level >= 4 and cat is not None and cat.count > 0:
            self.state = REASON
            self.page = 0
            self.until = now_ms + self.t.reason_timeout_ms
            return E_REDRAW
        # levels 1..3, or a 差评 with no catalogue installed: commit with no reason
        self._commit_ui = self.state
        self.state = COMMIT
        return E_COMMIT

    def _reason_press(self, button, now_ms):
        if button == 5:
            pages = self.pages()
            if pages > 1:
                self.page = (self.page + 1) % pages
                self.until = now_ms + self.t.reason_timeout_ms   # the citizen is still choosing
                return E_REDRAW
            return 0
        if button < 1 or button > TAGS_PER_PAGE:
            return 0
        i = self.page * TAGS_PER_PAGE + button - 1
        cat = self.catalogue
        if i >= cat.count:
            self.ignored += 1                   # no tag under this button on the last page
            return 0
        self.rec_reason = cat.code(i, self.rec_level)
        self._commit_ui = REASON
        self.state = COMMIT
        return E_COMMIT

    def _show(self, invite_id, lifetime_s, staff_no, name_bitmap, now_ms):
        self.scanning = False
        self.state = INVITED
        self.invite_id = invite_id
        self.staff_no = staff_no
        self.name_bitmap = name_bitmap
        self.shown_at = now_ms
        self.until = now_ms + lifetime_s * 1000
        return E_REDRAW | E_BEEP

    def _show_next(self, now_ms):
        if self._next_id and not self._paused:
            i = self._next_id
            self._next_id = 0
            return self._show(i, self._next_life, self._next_staff, self._next_bitmap, now_ms)
        return 0

    def _to_idle(self, now_ms):
        self.state = IDLE
        self.scanning = False
        self.invite_id = 0
        self.staff_no = ""
        self.name_bitmap = None

    def _remember(self, invite_id):
        if invite_id and not self._was_seen(invite_id):
            self._seen[self._seen_i] = invite_id
            self._seen_i = (self._seen_i + 1) % len(self._seen)

    def _was_seen(self, invite_id):
        for x in self._seen:
            if x == invite_id:
                return True
        return False
