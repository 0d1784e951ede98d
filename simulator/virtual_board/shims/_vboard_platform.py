# Virtual board platform set-up (simulator only, never flashed to a device).
# Runs once per interpreter start, before any user code, to make the WebAssembly runtime look
# like MicroPython on an ESP32 where the two differ only because of the host platform:
#  - the board filesystem (/flash in the runtime) is mounted at "/" like littlefs;
#  - OSError numbers use MicroPython's values (the runtime leaks Emscripten's, e.g. 44 for
#    ENOENT), so `e.errno == errno.ENOENT` and mpremote's error mapping work as on a board;
#  - os.ilistdir yields (name, type, inode, size) 4-tuples like littlefs does;
#  - `machine` is the simulator shim in machine.py.
# Nothing here adds a module or function a real board lacks.
import sys
import os
import vfs
import builtins

# Emscripten errno -> MicroPython errno (values from py/mperrno.h / Linux numbering).
_ERRNO = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 20: 17, 43: 19, 54: 20, 31: 21,
          28: 22, 51: 28, 55: 39, 138: 95, 69: 30, 36: 36}


def _wrap(fn):
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            n = e.args[0] if e.args else None
            if n in _ERRNO:
                raise OSError(_ERRNO[n])
            raise
    return call


def _ilistdir(fn, stat):
    # Not a generator itself: the directory is opened at call time, inside _wrap, so a missing
    # directory raises the mapped OSError right away, as on a board.
    def ilistdir(*args):
        base = args[0] if args else ""
        if isinstance(base, bytes):
            base = base.decode()
        return _sized(fn(*args), base, stat)
    return ilistdir


def _sized(entries, base, stat):
    for entry in entries:
        name = entry[0]
        size = 0
        if entry[1] == 0x8000:
            if not base:
                p = name
            elif base.endswith("/"):
                p = base + name
            else:
                p = base + "/" + name
            try:
                size = stat(p)[6]
            except OSError:
                pass
        yield (name, entry[1], 0, size)


def install():
    import machine  # noqa: F401  (loaded from /vboard before the root is remounted)
    raw_stat = os.stat
    for name in ("stat", "listdir", "mkdir", "rmdir", "remove", "unlink", "rename", "chdir",
                 "statvfs"):
        if hasattr(os, name):
            setattr(os, name, _wrap(getattr(os, name)))
    os.ilistdir = _wrap(_ilistdir(os.ilistdir, raw_stat))
    builtins.open = _wrap(builtins.open)
    vfs.umount("/")
    vfs.mount(vfs.VfsPosix("/flash"), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    for name in list(sys.modules):
        if name.startswith("_vboard_platform"):
            del sys.modules[name]
