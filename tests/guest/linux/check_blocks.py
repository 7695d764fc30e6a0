# SPDX-License-Identifier: GPL-2.0-or-later
"""What a disk written by aggvm-blkwrite holds, block by block.

A disk image is filled with FILL before the guest starts.  Afterwards each
4 KiB block is untouched (all FILL), valid (aggvm-blkwrite's header with
its own block number and a matching CRC-32), zeroed (all zero: data the
guest never wrote, as when lost memory was released as zero pages) or
torn (anything else).  A test passes when nothing is zeroed or torn.
"""

import struct
import zlib

BLOCK = 4096
FILL = 0xEE
MAGIC = 0x4b4c424d56474741
HEADER = struct.Struct("<QQQII")


def prepare(path, blocks):
    with open(path, "wb") as f:
        f.write(bytes([FILL]) * BLOCK * blocks)


def census(path):
    """Counts of untouched, valid, zeroed and torn blocks, and the first bad one."""
    counts = {"untouched": 0, "valid": 0, "zeroed": 0, "torn": 0}
    first_bad = None
    fill, zero = bytes([FILL]) * BLOCK, bytes(BLOCK)
    with open(path, "rb") as f:
        index = 0
        while True:
            data = f.read(BLOCK)
            if len(data) < BLOCK:
                break
            if data == fill:
                kind = "untouched"
            elif data == zero:
                kind = "zeroed"
            else:
                magic, block, _round, crc, _ = HEADER.unpack_from(data)
                body = data[:24] + b"\0\0\0\0" + data[28:]
                ok = magic == MAGIC and block == index and zlib.crc32(body) == crc
                kind = "valid" if ok else "torn"
            counts[kind] += 1
            if kind in ("zeroed", "torn") and first_bad is None:
                first_bad = index
            index += 1
    return counts, first_bad
