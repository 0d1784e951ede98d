"""Mounting the journal's littlefs partition: the firmware's own rule, shared by every board
(esp32.py on a flash partition, unix.py on a file-backed block device) so the tests run the code
the device runs.

- A blank partition (its first two blocks erased, all 0xFF) is formatted once and mounted.
- Any other mount failure is raised as OSError and NEVER repaired by formatting: the app then
  shows "存储故障，请联系工作人员" and reports ST_JOURNAL_CORRUPT; a technician exports what is
  readable and formats deliberately from maintenance mode. (The stock boot code loops forever on
  ESP32 or silently reformats on RP2 when a filesystem is bad: that would destroy ratings.)

Power-loss recovery is littlefs's own (copy-on-write metadata, checked at mount); there is no
separate repair step that could lose data.

`bdev` is a MicroPython block device with the extended interface: readblocks(block, buf, off),
writeblocks(block, buf, off), ioctl(op, arg) (4 = block count, 5 = block size, 6 = erase).
"""

try:
    import vfs
except ImportError:  # pragma: no cover - MicroPython before 1.23 kept these in os
    import os as vfs

BLANK_BLOCKS = 2      # littlefs keeps its superblock pair in blocks 0 and 1
IOCTL_BLOCK_SIZE = 5


def is_blank(bdev):
    """True when the first BLANK_BLOCKS blocks are erased flash (every byte 0xFF)."""
    size = bdev.ioctl(IOCTL_BLOCK_SIZE, 0)
    buf = bytearray(size)
    for block in range(BLANK_BLOCKS):
        bdev.readblocks(block, buf, 0)
        for b in buf:
            if b != 0xFF:
                return False
    return True


def mount(bdev, mount_point):
    """Mount littlefs on `bdev` at `mount_point`. Returns True when a blank partition was
    formatted first, False when an existing filesystem was mounted. Raises OSError when the
    partition holds something that does not mount (never reformatted here)."""
    try:
        vfs.mount(vfs.VfsLfs2(bdev), mount_point)
        return False
    except OSError:
        if not is_blank(bdev):
            raise
    vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), mount_point)
    return True
