"""The data stage: raw dataset -> one HDF5 shard per class label, plus meta.json.

`prepare_dataset` writes a dataset's shards and meta.json; for an image folder the pipeline runs
`prepare_label` per class folder, then `assemble_meta` (meta.json from the shards' attributes).
Training reads a shard through `read_shard` (checksum-verified against meta.json), and
`num_classes` is cheap enough for the Snakefile's parse time.  The readers are in
`labelwise.data.sources` (docs/data-sources.md), the shard and meta.json layout in
`labelwise.data.shards`.
"""

from .shards import assemble_meta, load_meta, prepare_dataset, prepare_label, read_shard
from .sources import SOURCES, num_classes

__all__ = ["SOURCES", "num_classes", "prepare_dataset", "prepare_label", "assemble_meta", "read_shard", "load_meta"]
