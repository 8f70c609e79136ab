"""The data stage: raw dataset -> one HDF5 shard per class label, plus meta.json.

    prepare_dataset(source, out_dir, root=..., labels=...)   # writes out_dir/shards/{label}.h5, out_dir/meta.json
    prepare_label(out_dir, root, label, ...)                  # imagefolder: one class folder -> its shard
    assemble_meta(out_dir, root, labels, ...)                 # imagefolder: meta.json from the shards' attributes
    images, attrs = read_shard(out_dir / "meta.json", label)  # what training reads, checksum-verified
    num_classes(source, root)                                 # cheap; the Snakefile calls it at parse time

Sources and their quirks are described in `labelwise.data.sources`; shard/meta layout in
`labelwise.data.shards`.
"""
from .shards import assemble_meta, load_meta, prepare_dataset, prepare_label, read_shard
from .sources import SOURCES, num_classes

__all__ = ["SOURCES", "num_classes", "prepare_dataset", "prepare_label", "assemble_meta", "read_shard", "load_meta"]
