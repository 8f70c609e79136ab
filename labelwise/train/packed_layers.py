"""Packed convolutions: K labels' convolution layers computed as one batched matrix product.

A layer over packed training's (B, K*C, H, W) tensor (channel block k is label k's) is either a
grouped convolution (groups=K, ``grouped``) or `BmmConv2d` / `BmmConvTranspose2d` here (im2col and
one `torch.bmm` over the labels, ``bmm``: the form tensor cores run at full rate), chosen by
runtime.packed_kernel (`kernel_for`).  Both hold the same parameters under the same names and
shapes, so checkpoints do not depend on the kernel, and both equal K separate networks up to
rounding.  The layouts, and why `auto` picks which: docs/packed-training.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LabelwiseError

KERNELS = ("auto", "grouped", "bmm")


def kernel_for(requested: str, device: torch.device | str) -> str:
    """The kernel `requested` ('auto', 'grouped' or 'bmm') means on `device` (see the module docstring)."""
    if requested not in KERNELS:
        raise LabelwiseError(f"runtime.packed_kernel must be one of {', '.join(KERNELS)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "bmm" if torch.device(device).type == "cuda" else "grouped"


class _BmmBase(nn.Module):
    """Parameters laid out exactly as the grouped nn.Conv2d/ConvTranspose2d of K groups has them."""

    def __init__(self, k: int, weight_shape: tuple, out_channels: int, kernel_size, stride, padding, bias: bool):
        super().__init__()
        self.k, self.kernel_size, self.stride, self.padding = k, _pair(kernel_size), _pair(stride), _pair(padding)
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.empty(k * out_channels)) if bias else None
        # Values come from the per-label networks (`_Packed.from_networks` loads their state dicts).
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class BmmConv2d(_BmmBase):
    """K convolutions (label k: in_channels -> out_channels) over (B, K*in, H, W) as one bmm."""

    def __init__(self, k: int, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias=True):
        kh, kw = _pair(kernel_size)
        super().__init__(k, (k * out_channels, in_channels, kh, kw), out_channels, kernel_size, stride, padding, bias)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k, (kh, kw), (sh, sw), (ph, pw) = self.k, self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, K*in*kh*kw, L), label-major
        n = self.in_channels * kh * kw
        cols = cols.view(b, k, n, ho * wo).permute(1, 2, 0, 3).reshape(k, n, b * ho * wo)
        weight = self.weight.view(k, self.out_channels, n)
        if self.bias is None:
            y = torch.bmm(weight, cols)
        else:
            y = torch.baddbmm(self.bias.view(k, self.out_channels, 1), weight, cols)
        return y.view(k, self.out_channels, b, ho, wo).permute(2, 0, 1, 3, 4).reshape(b, k * self.out_channels, ho, wo)


class BmmConvTranspose2d(_BmmBase):
    """K transposed convolutions over (B, K*in, H, W): one bmm with the transposed weights, then fold."""

    def __init__(
        self, k: int, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0, bias=True
    ):
        kh, kw = _pair(kernel_size)
        super().__init__(k, (k * in_channels, out_channels, kh, kw), out_channels, kernel_size, stride, padding, bias)
        self.in_channels, self.out_channels, self.output_padding = in_channels, out_channels, _pair(output_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k, (kh, kw), (sh, sw), (ph, pw) = self.k, self.kernel_size, self.stride, self.padding
        ho = (h - 1) * sh - 2 * ph + kh + self.output_padding[0]
        wo = (w - 1) * sw - 2 * pw + kw + self.output_padding[1]
        n = self.out_channels * kh * kw
        xs = x.reshape(b, k, self.in_channels, h * w).permute(1, 2, 0, 3).reshape(k, self.in_channels, b * h * w)
        cols = torch.bmm(self.weight.view(k, self.in_channels, n).transpose(1, 2), xs)  # (K, out*kh*kw, B*L)
        cols = cols.view(k, n, b, h * w).permute(2, 0, 1, 3).reshape(b, k * n, h * w)
        y = F.fold(cols, (ho, wo), (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, K*out, Ho, Wo)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def packed_conv(m: nn.Module, k: int, kernel: str) -> nn.Module:
    """The K-label version of the single network's convolution `m`, computed by `kernel`."""
    if m.dilation != (1,) * len(m.dilation) or m.padding_mode != "zeros" or m.groups != 1:
        raise TypeError(f"cannot pack {m}: only plain zero-padded, ungrouped convolutions are supported")
    transposed = isinstance(m, nn.ConvTranspose2d)
    bias = m.bias is not None
    if kernel == "grouped":
        extra = {"output_padding": m.output_padding} if transposed else {}
        return type(m)(
            k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding, groups=k, bias=bias, **extra
        )
    if kernel == "bmm":
        if transposed:
            return BmmConvTranspose2d(
                k, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.output_padding, bias
            )
        return BmmConv2d(k, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias)
    raise ValueError(f"unknown packed kernel {kernel!r}; choose grouped or bmm")
