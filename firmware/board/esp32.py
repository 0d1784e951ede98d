"""The reference board: ESP32-S3 DevKit with five lit buttons, an SSD1306 128x64 I2C OLED, a
piezo buzzer and the data link on UART1 (never UART0: that is the REPL, and mpremote's Ctrl-C
would interrupt the app). The only module besides esp32-specific boards that imports `machine`.

Pin map (README.md "Pin map"; override with "pins" in config.json):
    buttons 1..5   GPIO 4, 5, 6, 7, 15   to GND, internal pull-ups (pressed = 0)
    LEDs 1..5      GPIO 12, 13, 14, 38, 39  (through a transistor/resistor, high = on)
    OLED I2C       SDA GPIO 1, SCL GPIO 2, address 0x3C, 400 kHz
    buzzer         GPIO 21, PWM 2.7 kHz
    data UART1     TX GPIO 10, RX GPIO 11, 115200 8N1
    scanner UART2  TX GPIO 17, RX GPIO 18, 9600 8N1 (waiting-area evaluators: GM65-class module)

The journal lives on its own littlefs partition (label "journal", see README.md) mounted at
/journal. A blank (never formatted) partition is formatted once; a partition that fails to
mount is reported as corrupt and NEVER reformatted automatically (the stock boot code loops or
reformats; a technician decides, from maintenance mode).
"""

import os

import framebuf
import machine

from firmware.board import journalfs

PINS = {"buttons": (4, 5, 6, 7, 15), "leds": (12, 13, 14, 38, 39), "sda": 1, "scl": 2,
        "oled_addr": 0x3C, "buzzer": 21, "uart_tx": 10, "uart_rx": 11, "scan_tx": 17,
        "scan_rx": 18}
JOURNAL_LABEL = "journal"
JOURNAL_MOUNT = "/journal"


class SSD1306(framebuf.FrameBuffer):
    """Minimal SSD1306 I2C driver (128x64, page addressing), after micropython-lib's."""

    def __init__(self, i2c, addr=0x3C, w=128, h=64):
        self.i2c = i2c
        self.addr = addr
        self.w = w
        self.h = h
        self.buf = bytearray(w * h // 8)
        framebuf.FrameBuffer.__init__(self, self.buf, w, h, framebuf.MONO_VLSB)
        self._cmd1 = bytearray(2)
        self._wlist = [b"\x40", self.buf]
        for c in (0xAE, 0x20, 0x00, 0x40, 0xA1, 0xA8, h - 1, 0xC8, 0xD3, 0x00, 0xDA, 0x12,
                  0xD5, 0x80, 0xD9, 0xF1, 0xDB, 0x30, 0x81, 0xFF, 0xA4, 0xA6, 0x8D, 0x14, 0xAF):
            self._cmd(c)
        self.fill(0)
        self.show()

    def _cmd(self, c):
        self._cmd1[0] = 0x80
        self._cmd1[1] = c
        self.i2c.writeto(self.addr, self._cmd1)

    def blit_mono(self, bm, w, h, x, y):
        """Blit a MONO_HLSB bitmap (host-rendered text) at x, y."""
        fb = framebuf.FrameBuffer(bytearray(bm), w, h, framebuf.MONO_HLSB)
        self.blit(fb, x, y, 0)

    def show(self):
        for c in (0x21, 0, self.w - 1, 0x22, 0, self.h // 8 - 1):
            self._cmd(c)
        self.i2c.writevto(self.addr, self._wlist)


class UartStream:
    """UART1 as the non-blocking byte stream links/serial_link.py expects."""

    def __init__(self, uart):
        self.uart = uart

    def read(self, n):
        if not self.uart.any():
            return None
        return self.uart.read(n)

    def write(self, data):
        return self.uart.write(data)


class Board:
    def __init__(self, pins=None):
        p = dict(PINS)
        if pins:
            p.update(pins)
        self.pins = p
        self._buttons = [machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP)
                         for n in p["buttons"]]
        self._leds = [machine.Pin(n, machine.Pin.OUT, value=0) for n in p["leds"]]
        self.i2c = machine.I2C(0, sda=machine.Pin(p["sda"]), scl=machine.Pin(p["scl"]),
                               freq=400000)
        try:
            self.fb = SSD1306(self.i2c, p["oled_addr"])
        except OSError:
            self.fb = _NoScreen()     # no display answering: keep rating, the LEDs still work
        self._pwm = machine.PWM(machine.Pin(p["buzzer"]), freq=2700, duty_u16=0)
        self._beep_timer = machine.Timer(0)
        self.wdt = None
        self.journal_error = None

    # buttons: bit i set = button i+1 pressed (pins read 0 when pressed)
    def buttons(self):
        m = 0
        for i in range(len(self._buttons)):
            if not self._buttons[i].value():
                m |= 1 << i
        return m

    def leds(self, mask):
        for i in range(len(self._leds)):
            self._leds[i].value((mask >> i) & 1)

    def beep(self, ms):
        self._pwm.duty_u16(32768)
        self._beep_timer.init(mode=machine.Timer.ONE_SHOT, period=ms,
                              callback=lambda t: self._pwm.duty_u16(0))

    def start_watchdog(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)
        return self.wdt

    def restart(self):
        """Hard reset (the app's maintenance restart); does not return."""
        machine.reset()

    def data_stream(self, cfg=None):
        baud = 115200
        if cfg is not None:
            baud = cfg["serial"]["baud"]
        uart = machine.UART(1, baudrate=baud, tx=self.pins["uart_tx"], rx=self.pins["uart_rx"],
                            rxbuf=2048, txbuf=2048, timeout=0)
        return UartStream(uart)

    def scanner(self, cfg=None):
        """The ticket/receipt scanner on UART2 (board/gm65.py reads its lines)."""
        from firmware.board.gm65 import Gm65
        baud = 9600
        if cfg is not None:
            baud = cfg["scanner"]["baud"]
        uart = machine.UART(2, baudrate=baud, tx=self.pins["scan_tx"], rx=self.pins["scan_rx"],
                            rxbuf=256, timeout=0)
        return Gm65(UartStream(uart))

    def net_up(self, cfg):
        """Start joining the configured Wi-Fi; the MQTT link retries until it is up."""
        import network
        w = network.WLAN(network.STA_IF)
        w.active(True)
        if not w.isconnected():
            w.connect(cfg["wifi"]["ssid"], cfg["wifi"]["password"])
        return w.isconnected()

    def flash_path(self, name):
        """A file on the main filesystem, beside config.json and device.key (cwd is "/")."""
        return name

    # journal partition
    def journal_root(self):
        """Mount the journal partition (once) and return its mount point. Raises OSError when
        it cannot be mounted; the app then reports a corrupt journal and refuses ratings."""
        try:
            os.stat(JOURNAL_MOUNT + "/.")
            return JOURNAL_MOUNT
        except OSError:
            pass
        import esp32
        parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=JOURNAL_LABEL)
        if not parts:
            raise OSError("no '%s' partition in the partition table" % JOURNAL_LABEL)
        try:
            journalfs.mount(parts[0], JOURNAL_MOUNT)   # blank: formatted once; bad: raises
        except OSError as e:
            self.journal_error = e
            raise        # damaged filesystem: report, never reformat
        return JOURNAL_MOUNT


class _NoScreen:
    def fill(self, c):
        pass

    def text(self, s, x, y, c=1):
        pass

    def fill_rect(self, x, y, w, h, c):
        pass

    def blit_mono(self, bm, w, h, x, y):
        pass

    def show(self):
        pass
