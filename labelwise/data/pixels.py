"""Any decoded image as 8-bit RGB, by one stated rule (the image-folder reader's conversion).

PIL's own `convert("RGB")` clips 16- and 32-bit pixels to 255 and drops transparency without a
word; `to_rgb8` scales 16-bit and float images to 0..255 (refusing floats outside [0, 1]),
composites transparency onto black (the background the networks pad with) and reports that it did,
and leaves every other mode to PIL.  The rule mode by mode: docs/data-sources.md ("Pixels").
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}


def to_rgb8(image: Image.Image) -> tuple[Image.Image, bool]:
    """(`image` as 8-bit RGB, whether transparency was composited onto black): the module's rule."""
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB"), False
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                f"floating-point pixels outside [0, 1] (min {values.min():g}, max {values.max():g}); "
                "save the image as 8- or 16-bit"
            )
        grey = np.rint(values * 255.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB"), False
    if image.mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA") if image.mode != "La" else image.convert("LA").convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:
            return rgba.convert("RGB"), False  # an alpha channel that is opaque everywhere
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB"), True
    return image.convert("RGB"), False
