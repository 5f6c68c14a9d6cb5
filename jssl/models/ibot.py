"""DINO's network with iBOT's patch outputs (DINOv2): backbone -> head on the [CLS] token,
and the head (shared, DINOv2's default) or a head of its own on chosen patch tokens."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class IBOTNetwork(nn.Module):
    """backbone (a ViT with ``mask_token=True``) -> ``head``; ``ibot_head`` (None: share
    ``head``) for the patch tokens. Parameters {"backbone", "head"[, "ibot_head"]}.

    ``__call__(x, *, train)`` is DINO's ``EncoderWithHead``: ``(head(h), aux)`` with
    ``aux["features"] = h``, the [CLS] features (evaluation, local crops, teacher kNN).
    """

    backbone: nn.Module
    head: nn.Module
    ibot_head: nn.Module | None = None

    def __call__(self, x: jax.Array, *, train: bool):
        h, aux = self.backbone(x, train=train)
        if self.is_initializing() and self.ibot_head is not None:
            self.ibot_head(h, train=train)
        return self.head(h, train=train), {**aux, "features": h}

    def tokens(self, x: jax.Array, patches: jax.Array, *, train: bool, mask=None):
        """[CLS] and patch outputs of images x [N, H, W, C].

        Args:
          x: images.
          patches: int [N, M], the patch tokens (row-major indices) to put through the head.
          train: training mode.
          mask: optional bool [N, L]: patch embeddings replaced by the mask token.

        Returns:
          (cls logits [N, K], patch logits [N, M, K'], h [N, D], every patch token's
          features [N, L, D] (DINOv3's Gram anchoring compares them)). The [CLS] and the patch
          tokens go through the (shared or own) head as two batches: the same outputs as
          DINOv2's one concatenated batch for its BatchNorm-free heads, and with
          ``dino.head_use_bn`` each group normalised by its own statistics (in one batch
          the M times more numerous patch tokens set the [CLS] tokens' statistics, and on
          digits the [CLS] head then drifted to uniform outputs).
        """
        h, aux = self.backbone(x, train=train, mask=mask)
        fmap = aux["feature_map"]
        n, d = fmap.shape[0], fmap.shape[-1]
        tokens = fmap.reshape(n, -1, d)
        picked = jnp.take_along_axis(tokens, patches[..., None].astype(jnp.int32), axis=1)
        m = picked.shape[1]
        flat = picked.reshape(n * m, d)
        patch_head = self.head if self.ibot_head is None else self.ibot_head
        z, zp = self.head(h, train=train), patch_head(flat, train=train)
        return z, zp.reshape(n, m, zp.shape[-1]), h, tokens
