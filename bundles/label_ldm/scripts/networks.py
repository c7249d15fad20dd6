"""The diffusion network: MONAI's DiffusionModelUNet, with the lesion volumes also added to its time embedding.

Why a wrapper: the four volumes arrive as one cross-attention token, and attention over a single token is a fixed
linear map of it, added only at the attention levels (the 12^3 and 6^3 latents of the default profile). The first
weights trained that way ranked tumour sizes poorly. DiffusionModelUNet can add a class embedding to the time
embedding, which reaches every residual block, but it embeds integer labels only (nn.Embedding). So the UNet is
built with a class embedding and that embedding is replaced by a small MLP on the continuous volumes; MONAI's
forward then adds it to the time embedding unchanged. Cross-attention on the same token stays.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet


class VolumeConditionedUNet(torch.nn.Module):
    """`unet` (built with `num_class_embeds` set and `with_conditioning`) conditioned on a (B, 1, C) volume token."""

    def __init__(self, unet: DiffusionModelUNet, num_conditions: int) -> None:
        super().__init__()
        if unet.num_class_embeds is None or not unet.with_conditioning:
            raise ValueError(
                "VolumeConditionedUNet needs a DiffusionModelUNet built with num_class_embeds (any "
                "positive integer: the embedding is replaced) and with_conditioning=True"
            )
        dim = unet.class_embedding.embedding_dim
        last = torch.nn.Linear(dim, dim)
        # starts as the plain cross-attention model: the embedding adds nothing until training moves it
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        unet.class_embedding = torch.nn.Sequential(torch.nn.Linear(int(num_conditions), dim), torch.nn.SiLU(), last)
        self.unet = unet

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        if context is None:
            raise ValueError(
                "VolumeConditionedUNet needs the conditioning token (context); classifier-free "
                "guidance passes the fill value, not None"
            )
        return self.unet(x, timesteps, context=context, class_labels=context.flatten(1), **kwargs)
