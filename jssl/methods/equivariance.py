"""Equivariance on spatial feature maps, alongside SimCLR's invariance.

SimCLR makes the pooled features h invariant to its augmentations. This method
adds f(pi(x)) ~ pi'(f(x)) on the backbone's last feature map for pi in the
dihedral group of flips and 90-degree rotations (``equivariance.transforms``),
with pi' the same transform of the [h, w, C] map: the map must move with the
image instead of ignoring the move. Loss = NT-Xent(z1, z2) + weight *
mean_positions (2 - 2 cos(f(pi x), pi' f(x))).

Equivariance alone has a trivial solution (a constant map), which the
contrastive term rules out; ``equivariance.contrastive_weight=0`` shows it:
``fmap_spatial_std`` (how much the normalised map varies over positions)
and ``equiv_identity`` (the same loss against the *untransformed* map, which
an equivariant-but-not-invariant map keeps high) are logged to tell a
layout-aware map from a constant one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses, pretext
from jssl.checks import NON_NEGATIVE, one_of
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead

# transforms -> the D4 elements drawn from (see pretext.dihedral).
TRANSFORMS = {"d4": (0, 1, 2, 3, 4, 5, 6, 7), "rot90": (0, 1, 2, 3), "flips": (0, 4)}


def transform_set(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    name = config.equivariance.transforms
    if name not in TRANSFORMS:
        raise UserError(
            f"Unknown equivariance.transforms {name!r}; valid: {', '.join(sorted(TRANSFORMS))}."
        )
    return TRANSFORMS[name]


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(v1, v2, pi(v1), k): two SimCLR views, the first one transformed, and the D4 index k [B]."""
    k_views, k_pi = jax.random.split(key)
    v1, v2 = parts.two_views(k_views, batch, config)
    elements = jnp.asarray(transform_set(config), jnp.int32)
    k = elements[jax.random.randint(k_pi, (v1.shape[0],), 0, len(elements))]
    return v1, v2, jax.vmap(pretext.dihedral)(v1, k), k


def spatial_std(fmap: jax.Array) -> jax.Array:
    """Mean over examples and channels of the std over positions of L2-normalised features."""
    f = losses.l2_normalize(fmap.astype(jnp.float32))
    return jnp.mean(jnp.std(f, axis=(1, 2)))


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    """SimCLR's encoder and projection head (``config.simclr``)."""
    return parts.projection_network(config, config.simclr, use_bn=config.simclr.proj_use_bn)


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    ec = config.equivariance
    temperature = config.simclr.temperature

    def loss_fn(params, batch_stats, views, method_state, step, key):
        v1, v2, pv1, k = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(
            model, params, batch_stats, jnp.concatenate([v1, v2, pv1])
        )
        fmap = aux["feature_map"]
        if fmap.shape[1] != fmap.shape[2]:
            raise ValueError(f"equivariance needs square feature maps, got {fmap.shape[1:3]}")
        moved = jax.vmap(pretext.dihedral)(fmap[:n], k)  # pi'(f(x))
        equiv = losses.equivariance_loss(fmap[2 * n :], moved)
        contrastive = losses.nt_xent(z[:n], z[n : 2 * n], temperature=temperature)
        loss = ec.contrastive_weight * contrastive + ec.weight * equiv
        metrics = {
            "contrastive": contrastive,
            "equivariance": equiv,
            "equiv_identity": losses.equivariance_loss(fmap[2 * n :], fmap[:n]),
            "fmap_spatial_std": spatial_std(fmap[:n]),
            "z_std": losses.embedding_std(z[: 2 * n]),
            "h_std": losses.embedding_std(aux["features"][: 2 * n]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    if metrics.get("fmap_spatial_std", 1.0) < 1e-3:
        return [
            f"feature-map spatial std {metrics['fmap_spatial_std']:.2e}: the maps are constant "
            "over positions, which satisfies equivariance trivially"
        ]
    if not config.equivariance.contrastive_weight:
        return []
    return parts.std_warnings(metrics, {"z_std": config.simclr.proj_dim})


EQUIVARIANCE = Method(
    name="equivariance",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.SIMCLR_FIELDS,
        "equivariance.transforms": one_of(tuple(sorted(TRANSFORMS)), "equivariance.transforms"),
        "equivariance.weight": NON_NEGATIVE,
        "equivariance.contrastive_weight": NON_NEGATIVE,
    },
)
