"""A device + agent rig for the firmware tests: the real app on the simulated board, the test
agent on the other end of a byte stream, and a manual clock. MicroPython subset."""

from firmware.app import App
from firmware.board.sim import SimBoard, pipe_pair
from firmware.clock import Clock
from firmware.config import Config
from fw_agent import AgentEnd

KEY = bytes(range(100, 132))
DEV = 1001
WALL = 1795000000


class Rig:
    def __init__(self, root, up=None, down=None, seed=1, capacity=50000, stream=None,
                 agent_stream=None, flow=None, journal=None, role="window"):
        self.root = root
        self.t = [0]
        self.now = 0
        self.clock = Clock(ticks=lambda: self.t[0])
        if stream is None:
            stream, agent_stream = pipe_pair()
        self.stream = stream
        f = {"thanks_s": 1}
        if flow:
            f.update(flow)
        self.cfg = Config({"device_id": DEV, "catalogue_path": root + "/cat.bin", "role": role,
                           "journal": {"dir": root + "/j", "capacity": capacity}, "flow": f})
        self.board = SimBoard(stream, root + "/j")
        self.app = App(self.board, self.cfg, KEY, clock=self.clock, phrases={}, journal=journal)
        self.agent = AgentEnd(DEV, KEY, agent_stream, seed=seed, up_faults=up,
                               down_faults=down, time_fn=self.wall)
        self.agent_on = True

    def wall(self):
        return WALL + self.now // 1000

    def reboot(self):
        """Power-cycle the device: a new app on the same journal directory and link."""
        if self.app.journal is not None:
            self.app.journal.close()
        self.app = App(self.board, self.cfg, KEY, clock=self.clock, phrases={})
        return self.app

    def run(self, ms, step=5):
        end = self.now + ms
        while self.now < end:
            self.now += step
            self.t[0] = self.now
            self.app.step(self.now)
            if self.agent_on:
                self.agent.step(self.now)

    def run_until(self, cond, limit_ms=120000, step=5):
        end = self.now + limit_ms
        while not cond():
            if self.now >= end:
                raise AssertionError("condition not reached in %d ms" % limit_ms)
            self.run(step, step)

    def rate(self, button):
        self.board.press(button)
        self.run(80)
        self.board.release(button)
        self.run(80)

    def scan(self, code):
        """A waiting-area citizen scans a ticket or receipt code."""
        self.board.scan(code)
        self.run(60)

    def journalled(self):
        j = self.app.journal
        return j.next_rseq - 1


def hello_after_reboot(rig):
    """Issue 17: the first HELLO after a power cut is fresh (its counter came back from flash)
    and is accepted at once; the HELLO recorded before the cut is refused as a replay. Returns
    (counter before, counter after, HELLOs the device sent after the cut)."""
    rig.run_until(lambda: rig.app.uplink.established, 5000)
    first = rig.agent.hellos[-1]["hello_ctr"]
    recorded = rig.agent.last_hello
    rig.reboot()
    rejected = rig.agent.rejected
    rig.run_until(lambda: rig.app.uplink.established, 5000)
    if rig.agent.rejected != rejected:
        raise AssertionError("the first HELLO after the reboot was refused")
    second = rig.agent.hellos[-1]["hello_ctr"]
    rig.agent.feed_raw(rig.now, recorded)
    rig.run(50)
    if rig.agent.rejected != rejected + 1 or len(rig.agent.hellos) != 2:
        raise AssertionError("the HELLO recorded before the reboot was accepted again")
    return first, second, rig.app.uplink.counters["hello"]
