"""The brainSPADE3D generator: MONAI `SPADENet` with the MRI contrast as an explicit condition.

MONAI has the SPADE generator (`SPADENet`: VAE style encoder + SPADE decoder) but nothing that
(a) feeds a non-spatial condition (the contrast) into the SPADE normalisation, nor (b) renders at the
input resolution: `SPADEDecoder` upsamples *after* its last residual block, so its last SPADE block
runs at half resolution and the final 3x3x3 conv sees a nearest-upsampled map. This thin wrapper adds
both: contrast one-hot channels broadcast over space are appended to the label channels (so every
SPADE block is modulated by label *and* contrast), and a small full-resolution head (MONAI
`Convolution` blocks) sees the upsampled SPADE features together with the sharp label map. The
background is masked with the label map's brain fraction, as the reference does with its skull mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.nets import SPADENet
from torch.utils.checkpoint import checkpoint

from brainspade.contrasts import CONTRASTS
from brainspade.labels import NUM_LABELS


class ContrastSPADENet(nn.Module):
    """Partial-volume label map (B, 10, X, Y, Z) + contrast index (B,) + style code -> image (B, 1, X, Y, Z).

    Args:
        input_shape: spatial shape (each side divisible by 2 ** len(channels)).
        channels: SPADENet encoder widths (the decoder uses them reversed); copied, SPADENet mutates it.
        z_dim: style code size.
        spade_intermediate_channels: hidden width of the SPADE normalisation convs.
        head_channels: width of the SPADENet output (its full-resolution features).
        head_hidden, head_kernel: hidden width and kernel size of the full-resolution head.
        num_contrasts: number of contrast one-hot channels (default: len(brainspade.contrasts.CONTRASTS)).
        mask_background: multiply the output by the brain fraction (1 - background PV).
        use_checkpoint: gradient checkpointing of the SPADE decoder blocks in training (recomputed in the backward
            pass: less activation memory for the paper profile at the cost of about one more forward).
        tile_size, tile_stride: `synthesise` decodes in grid-aligned tiles of this size and stride (voxels, multiples
            of `grid_step`) blended with a Gaussian weight: the decoder's instance norms then see the statistics of
            the patches it was trained on (patch training), not those of the whole volume. None: whole volumes.
        style_film: the style code also scales and shifts the head's hidden features (FiLM, one Linear layer,
            zero-initialised so it starts as the identity). SPADE's only style path is the decoder's first grid,
            whose per-channel level the next instance norm removes: with it alone the code collapsed to the prior
            (sampled styles spread 25x less than the phantom scanners, measured), so appearance did not carry.
        style_regions: the style code also scales and shifts the output inside each label, per contrast (one Linear
            layer to a (scale, shift) per contrast and label, weighted by the PV map; zero-initialised: the identity),
            SEAN's region-wise style idea in its smallest form. Why: a scanner's appearance is mostly how bright each
            tissue is against the others (contrast, gamma, lesion conspicuity), which SPADE sets from the label map
            alone; through the first grid and the FiLM head the code changed tissue profiles by at most 0.4-0.9x of
            the phantom scanners' spread, whatever codes were decoded (docs, where the spread is lost).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64, 64),
        z_dim: int = 32,
        spade_intermediate_channels: int = 32,
        head_channels: int = 4,
        head_hidden: int = 16,
        head_kernel: int = 1,
        num_contrasts: int | None = None,
        num_labels: int = NUM_LABELS,
        mask_background: bool = True,
        upsampling_mode: str = "nearest",
        use_checkpoint: bool = False,
        style_film: bool = False,
        style_regions: bool = False,
        tile_size: Sequence[int] | None = None,
        tile_stride: Sequence[int] | None = None,
    ):
        super().__init__()
        self.use_checkpoint = bool(use_checkpoint)
        self.num_labels = int(num_labels)
        self.num_contrasts = int(num_contrasts if num_contrasts is not None else len(CONTRASTS))
        self.label_nc = self.num_labels + self.num_contrasts
        self.z_dim = int(z_dim)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.mask_background = mask_background
        act = ("LEAKYRELU", {"negative_slope": 0.2})
        self.spade = SPADENet(
            spatial_dims=3,
            in_channels=1,
            out_channels=head_channels,
            label_nc=self.label_nc,
            input_shape=list(self.input_shape),
            channels=list(channels),  # a copy: SPADENet mutates the list
            z_dim=self.z_dim,
            is_vae=True,
            spade_intermediate_channels=spade_intermediate_channels,
            norm="INSTANCE",
            act=act,
            last_act=act,
            upsampling_mode=upsampling_mode,
        )
        # per-voxel head: intensity mixing at tissue boundaries is local in the partial volumes, so 1x1x1
        # convs on [SPADE features, PV] keep edges sharp at a fraction of a 3x3x3 conv's cost at full size
        self.head = nn.Sequential(
            Convolution(3, head_channels + self.label_nc, head_hidden, kernel_size=head_kernel, act=act, norm=None),
            Convolution(3, head_hidden, 1, kernel_size=head_kernel, act=None, norm=None, conv_only=True),
        )
        self.tile_size = list(tile_size) if tile_size else None
        self.tile_stride = list(tile_stride) if tile_stride else self.tile_size
        self.film = nn.Linear(self.z_dim, 2 * head_hidden) if style_film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.regions = nn.Linear(self.z_dim, 2 * self.num_contrasts * self.num_labels) if style_regions else None
        if self.regions is not None:
            nn.init.zeros_(self.regions.weight)
            nn.init.zeros_(self.regions.bias)

    @staticmethod
    def contrast_indices(pv: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """The contrast index of each sample of the batch, (B,) (one index is shared by the batch)."""
        contrast = torch.as_tensor(contrast, device=pv.device).long().reshape(-1)
        return contrast.expand(pv.shape[0]) if contrast.numel() == 1 and pv.shape[0] > 1 else contrast

    def condition(self, pv: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """Label channels + contrast one-hot broadcast over space: (B, label_nc, X, Y, Z)."""
        contrast = self.contrast_indices(pv, contrast)
        onehot = torch.nn.functional.one_hot(contrast, self.num_contrasts).to(pv.dtype)
        onehot = onehot[:, :, None, None, None].expand(-1, -1, *pv.shape[2:])
        return torch.cat([pv, onehot], 1)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Style encoder (SPADENet's VAE encoder): image -> (mu, logvar)."""
        return self.spade.encoder(image)

    def decode(
        self, pv: torch.Tensor, contrast: torch.Tensor, z: torch.Tensor, latent_window: tuple[slice, ...] | None = None
    ) -> torch.Tensor:
        """Label map + contrast + style code -> image. `latent_window`: `pv` is a patch of the full grid whose
        corner and size are multiples of `self.grid_step`; the slices pick its cells of the decoder's first grid
        (see `patch_window`), so a patch is decoded as it would be inside the whole volume (patch training)."""
        seg = self.condition(pv, contrast)
        feat = self._spade_decode(seg, z, latent_window)
        hidden = self.head[0](torch.cat([feat, seg], 1))
        if self.film is not None:
            scale, shift = self.film(z)[:, :, None, None, None].chunk(2, dim=1)
            hidden = hidden * (1.0 + scale) + shift
        out = self.head[1](hidden)
        if self.regions is not None:
            out = self.region_style(out, pv, contrast, z)
        if self.mask_background:
            out = out * (1.0 - pv[:, :1])
        return out

    def region_style(
        self, out: torch.Tensor, pv: torch.Tensor, contrast: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """`out` scaled and shifted inside each label by the code's (scale, shift) for this contrast (`style_regions`)."""
        batch = torch.arange(pv.shape[0], device=pv.device)
        params = self.regions(z).view(-1, self.num_contrasts, 2, self.num_labels)[
            batch, self.contrast_indices(pv, contrast)
        ]
        pv = pv.to(params.dtype)
        scale = torch.einsum("bl,blxyz->bxyz", params[:, 0], pv)[:, None]
        shift = torch.einsum("bl,blxyz->bxyz", params[:, 1], pv)[:, None]
        return out * (1.0 + scale.to(out.dtype)) + shift.to(out.dtype)

    def synthesise(self, pv: torch.Tensor, contrast: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The whole image of `pv`: decoded whole, or in tiles (`tile_size`) when the generator was trained on patches."""
        if self.tile_size is None:
            return self.decode(pv, contrast, z)
        from monai.data.utils import compute_importance_map

        tiles = tile_windows(pv.shape[2:], self.tile_size, self.tile_stride, self.grid_step)
        out = weight = None
        for vox, lat in tiles:
            index = (slice(None), slice(None), *vox)
            patch = self.decode(pv[index], contrast, z, lat)
            w = compute_importance_map(patch.shape[2:], mode="gaussian", device=patch.device, dtype=patch.dtype)
            if out is None:
                out, weight = patch.new_zeros((*patch.shape[:2], *pv.shape[2:])), patch.new_zeros(pv.shape[2:])
            out[index] += patch * w
            weight[vox] += w
        return out / weight

    @property
    def grid_step(self) -> int:
        """Voxels per cell of the decoder's first grid: patch corners and sides must be multiples of it."""
        return 2 ** len(self.spade.decoder.blocks)

    def _spade_decode(
        self, seg: torch.Tensor, z: torch.Tensor, latent_window: tuple[slice, ...] | None = None
    ) -> torch.Tensor:
        """SPADENet.decode, over a window of its first grid, with each SPADE residual block checkpointed when
        training with `use_checkpoint`.

        MONAI's SPADEDecoder maps the style code to a fixed first grid (a Linear layer sized by the whole
        volume) and has no checkpointing option, so its forward loop (fc -> blocks with upsampling -> last conv)
        is spelled out here over the same submodules: with no window the weights and outputs are unchanged.
        """
        dec = self.spade.decoder
        x = dec.fc(z).view(-1, dec.num_channels[0], *dec.latent_spatial_shape)
        if latent_window is not None:
            x = x[(slice(None), slice(None), *latent_window)]
        ckpt = self.use_checkpoint and self.training and torch.is_grad_enabled()
        for block in dec.blocks:
            x = dec.upsampling(checkpoint(block, x, seg, use_reentrant=False) if ckpt else block(x, seg))
        return dec.last_conv(x)

    def sample_z(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(batch, self.z_dim, generator=generator, device=device)

    def forward(
        self,
        pv: torch.Tensor,
        contrast: torch.Tensor,
        image: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        latent_window: tuple[slice, ...] | None = None,
    ):
        """With `image` (the whole volume): returns (fake, mu, logvar) (training / style transfer); else decodes `z`
        (or N(0,1)). With `latent_window`, `pv` is the matching patch (see `decode`)."""
        if image is not None:
            mu, logvar = self.encode(image)
            z = self.spade.encoder.reparameterize(mu, logvar)
            return self.decode(pv, contrast, z, latent_window), mu, logvar
        if z is None:
            z = self.sample_z(pv.shape[0], device=pv.device)
        return self.decode(pv, contrast, z)


def _axis_windows(size: int, side: int, hop: int, step: int) -> list[tuple[slice, slice]]:
    """(voxel slice, latent slice) of each grid-aligned window of `side` voxels along an axis of `size`, corners
    every `hop` voxels plus one flush with the far side; `side` is clipped to `size`."""
    side, hop = min(int(side), int(size)), max(int(step), int(hop))
    if size % step or side % step or hop % step:
        raise ValueError(f"windows of {side} every {hop} voxels on a side of {size} must be multiples of {step} voxels")
    corners = sorted({*range(0, size - side + 1, hop), size - side})
    return [(slice(c, c + side), slice(c // step, (c + side) // step)) for c in corners]


def patch_window(
    shape: Sequence[int], patch: Sequence[int], step: int, generator: torch.Generator | None = None
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """A random patch of a volume of `shape`, its corner on the decoder's `step`-voxel grid: (voxel slices, latent
    slices). Sides are clipped to the volume; every side of `shape` and `patch` must divide by `step`."""
    picked = []
    for size, side in zip(shape, patch, strict=True):
        options = _axis_windows(size, side, step, step)
        picked.append(options[int(torch.randint(len(options), (1,), generator=generator))])
    return tuple(v for v, _ in picked), tuple(lt for _, lt in picked)


def tile_windows(
    shape: Sequence[int], tile: Sequence[int], stride: Sequence[int], step: int
) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Grid-aligned tiles covering a volume of `shape`: [(voxel slices, latent slices)], corners every `stride`
    voxels plus one flush with the far side; sides clipped to the volume; everything a multiple of `step`."""
    windows = [()]
    for size, side, hop in zip(shape, tile, stride, strict=True):
        windows = [w + (a,) for w in windows for a in _axis_windows(size, side, hop, step)]
    return [(tuple(v for v, _ in w), tuple(lt for _, lt in w)) for w in windows]
