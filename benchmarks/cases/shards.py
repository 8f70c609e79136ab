"""Case c: shard I/O — labelwise.images.write_images/read_images vs the same bytes as raw .npy.

The data are real mnist5k images: one label's shard (~500 images) and all ten labels in one array
(5000), as uint8 N×1×28×28.  labelwise's format is HDF5, gzip level 4 with byte shuffle, one
chunk per image, a SHA-256 of the pixels written and verified on read, written atomically
(temporary file, fsync, rename).  The reference writes the same array with np.save and fsyncs
it (so both are durable on return) and reads it with np.load.  Reads come from the page cache in
both cases.
"""

from __future__ import annotations

import os

import numpy as np
from harness import compare, timed

NAME = "shards"
DESCRIPTION = "HDF5 shard write/read (gzip + sha256 + atomic) vs raw np.save/np.load of the same bytes"


def _np_save(path, images) -> None:
    with open(path, "wb") as f:
        np.save(f, images)
        f.flush()
        os.fsync(f.fileno())


def run(ctx) -> list:
    from labelwise.images import read_images, write_images

    one, _ = read_images(ctx.shard(0))
    everything = np.concatenate([read_images(ctx.shard(k))[0] for k in range(10)])
    rows = []
    for tag, images in (("1 label", one), ("10 labels", everything)):
        h5, npy = ctx.tmp / "bench.h5", ctx.tmp / "bench.npy"
        n = len(images)
        rows += compare(
            f"c.write/{tag}",
            ("np.save + fsync", timed(lambda: _np_save(npy, images))),
            {"write_images": timed(lambda: write_images(h5, images, label=0))},
            repeats=ctx.repeats(7),
            warmup=1,
            log=ctx.log,
        )
        rows += compare(
            f"c.read/{tag}",
            ("np.load", timed(lambda: np.load(npy))),
            {"read_images": timed(lambda: read_images(h5))},
            repeats=ctx.repeats(7),
            warmup=1,
            log=ctx.log,
        )
        for row in rows[-2:]:
            row.extra = {
                "images": n,
                "bytes": int(images.nbytes),
                "h5_bytes": h5.stat().st_size,
                "npy_bytes": npy.stat().st_size,
            }
            row.note = f"{n} images, {images.nbytes / 1e6:.1f} MB raw, {h5.stat().st_size / 1e6:.2f} MB as HDF5"
    return rows
