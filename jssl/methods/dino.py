"""DINO (Caron et al., 2021): self-distillation with no labels.

A student (backbone -> DINOHead) is trained to match, on every pair of
different crops, the centred and sharpened output of a teacher that is an
exponential moving average of the student:

- views: G global crops (seen by teacher and student) and L smaller local
  crops (student only), made on device (``augment.multi_crop``);
- loss: ``losses.dino_loss`` with the running centre in the method state,
  updated by ``losses.update_center`` on the teacher logits of the global batch; or,
  with ``dino.centering = "sinkhorn_knopp"`` (DINOv2's teacher, which the ``dinov2``
  modifier turns on), ``losses.distillation_loss`` against
  ``losses.sinkhorn_knopp_teacher``'s targets, the teacher logits of all global crops
  of the global batch balanced together (iBOT's: its masked patches), the centres
  left as they are;
- after each optimiser update the teacher follows the student
  (``ema.ema_teacher``, momentum 0.996 -> 1 on a cosine).

``method_state = {"teacher": EmaTeacherState(count, params, batch_stats),
"center": [K]}`` is part of the TrainState, so the checkpoint holds the
teacher, the centre and the EMA count (the schedules' position); resume is
exact.

The schedules (teacher momentum over the whole run, temperature warm-up and
last-layer freezing in epochs) are bound from the ``RunInfo`` the step hands
``make_loss`` and ``after_update``. The optimiser is ``config.optim.name =
"dino_adamw"`` (``jssl.optim``: per-tensor clipping, cosine weight decay).

DINOv2's additions (Oquab et al., 2023), both off by default (``dino.koleo_weight`` and
``dino.ibot_weight`` 0: the step is then DINO's, operation for operation):

- KoLeo (``losses.koleo_loss``) on the student's [CLS] features h of each global crop
  (over the global batch), summed over the global crops, times ``dino.koleo_weight``
  (DINOv2: 0.1);
- iBOT's masked-patch loss (``losses.ibot_patch_loss``, times ``dino.ibot_weight``,
  DINOv2: 1.0): each global crop is masked with probability ``dino.ibot_mask_probability``
  (0.5), then a share drawn uniformly from ``dino.ibot_mask_ratio`` (0.1-0.5) of its
  patches, at random positions, is replaced by the ViT's mask token in the student's input;
  the student's outputs on those patch tokens are trained to match the teacher's centred,
  sharpened outputs on the same tokens of the unmasked crop. The head is DINO's
  (``ibot_separate_head`` False, DINOv2's default) or one of its own (``ibot_*`` sizes);
  the patch centre ``method_state["ibot_center"]`` is separate from DINO's, with the same
  momentum and teacher temperature. Masks are drawn per crop from the step's key. DINOv2
  instead masks exactly half of each batch's global crops, with ratios stratified over the
  range, in BEiT's rectangular blocks; here each crop is masked independently and the
  patches are uniform random ones.

DINOv3's Gram anchoring (Siméoni et al., 2025), off by default (``dino.gram_weight`` 0):
``losses.gram_loss`` between the student's patch features of its global crops (masked for
iBOT) and those of the Gram teacher on the unmasked crops, times ``dino.gram_weight``,
from ``dino.gram_start_epochs`` on. The Gram teacher is a frozen copy of the EMA
teacher's ViT (``method_state["gram_teacher"]``), taken when the run reaches the start and
refreshed every ``dino.gram_update_epochs`` (DINOv3's ``update_gram``, every 10,000
iterations). Not reproduced: DINOv3's Gram teacher on 2x larger crops resized to the
student's grid, its cap of 3 refreshes and its weight schedule; the ViT's registers
(``model.kwargs.num_registers``) are DINOv3's storage tokens.

Forward passes: the student sees the global crops as one batch and the local
crops as another (two sizes: the ViT interpolates its position embeddings,
convolutional backbones pool globally); BatchNorm statistics are those of
each group over the global batch. The teacher runs in training mode (batch
statistics, as DINO's teacher) on the global crops; its own BatchNorm
statistics (used when it is applied in eval mode, e.g. for attention maps)
follow the same EMA as its parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import ema, losses, schedules
from jssl.checks import (
    EPOCHS,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    WIDTH,
    Added,
    boolean,
    integer,
    one_of,
    pair,
    show,
)
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import DINOHead, EncoderWithHead, create_model
from jssl.models.ibot import IBOTNetwork

# ----------------------------------------------------------------------------- model


def koleo_weight(config: ml_collections.ConfigDict) -> float:
    return config.dino.get("koleo_weight", 0.0)  # runs saved before DINOv2's options: 0


def ibot_weight(config: ml_collections.ConfigDict) -> float:
    """iBOT's loss weight; 0 without one, and for methods that reuse DINO's views (SwAV)."""
    return (config.get("dino") or {}).get("ibot_weight", 0.0)


def gram_weight(config: ml_collections.ConfigDict) -> float:
    """DINOv3's Gram anchoring weight (0: off; runs saved before it: 0)."""
    return (config.get("dino") or {}).get("gram_weight", 0.0)


def gram_steps(config: ml_collections.ConfigDict, run: RunInfo) -> tuple[int, int]:
    """(the step the Gram loss starts at, the steps between the Gram teacher's refreshes)."""
    d = config.dino
    every = max(1, run.epochs_to_steps(d.gram_update_epochs))
    return run.epochs_to_steps(d.gram_start_epochs), every


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead | IBOTNetwork:
    """DINO's EncoderWithHead; with iBOT an IBOTNetwork whose ViT has a mask token."""
    dtype = jnp.dtype(config.model.dtype)
    d = config.dino
    ibot = ibot_weight(config) > 0
    kwargs = {**config.model.kwargs, **({"mask_token": True} if ibot else {})}
    backbone = create_model(config.model.name, dtype=dtype, **kwargs)

    def head(out_dim, hidden_dim, bottleneck_dim, num_layers):
        return DINOHead(
            out_dim=out_dim,
            hidden_dim=hidden_dim,
            bottleneck_dim=bottleneck_dim,
            num_layers=num_layers,
            use_bn=d.head_use_bn,
            norm_last_layer=d.norm_last_layer,
            dtype=dtype,
        )

    dino_head = head(d.out_dim, d.hidden_dim, d.bottleneck_dim, d.num_layers)
    if not ibot:
        return EncoderWithHead(backbone=backbone, head=dino_head)
    ibot_head = None
    if d.ibot_separate_head:
        ibot_head = head(
            d.ibot_out_dim, d.ibot_hidden_dim, d.ibot_bottleneck_dim, d.ibot_num_layers
        )
    return IBOTNetwork(backbone=backbone, head=dino_head, ibot_head=ibot_head)


def ibot_out_dim(config: ml_collections.ConfigDict) -> int:
    d = config.dino
    return d.ibot_out_dim if d.ibot_separate_head else d.out_dim


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Teacher = copy of the student (params and BatchNorm statistics); centre = 0 (and
    iBOT's patch centre = 0)."""
    teacher = ema.ema_teacher(config.dino.teacher_momentum).init(params, batch_stats)
    state = {"teacher": teacher, "center": jnp.zeros((config.dino.out_dim,), jnp.float32)}
    if ibot_weight(config) > 0:
        state["ibot_center"] = jnp.zeros((ibot_out_dim(config),), jnp.float32)
    if gram_weight(config) > 0:  # the Gram teacher: a frozen snapshot of the teacher's ViT
        state["gram_teacher"] = jax.tree.map(jnp.copy, params["backbone"])
    return state


# ----------------------------------------------------------------------------- views


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> dict:
    """{"global": [B, G, g, g, C], "local": [B, L, l, l, C] (absent when L = 0)}; with
    iBOT also "mask": bool [B, G, P], the student's masked patches of each global crop."""
    if ibot_weight(config) <= 0:
        return parts.multi_crop_views(key, batch, config)
    key, mask_key = jax.random.split(key)
    views = parts.multi_crop_views(key, batch, config)
    d, g = config.dino, views["global"]
    views["mask"] = ibot_masks(
        mask_key,
        g.shape[0],
        g.shape[1],
        num_patches(config),
        probability=d.ibot_mask_probability,
        ratio=tuple(d.ibot_mask_ratio),
    )
    return views


def num_patches(config: ml_collections.ConfigDict) -> int:
    """Patch tokens of a global crop: (crop_size // patch_size) ** 2."""
    p = create_model(config.model.name, **config.model.kwargs).patch_size
    return (config.augment.crop_size // p) ** 2


def max_masked(num: int, ratio: tuple[float, float]) -> int:
    """The most patches ``ibot_masks`` masks in a crop of ``num`` patches."""
    return min(num, math.ceil(num * ratio[1]))


def ibot_masks(
    key: jax.Array,
    batch: int,
    crops: int,
    num: int,
    *,
    probability: float,
    ratio: tuple[float, float],
) -> jax.Array:
    """bool [batch, crops, num]: crop (b, c) uses key ``split(split(key, batch)[b], crops)[c]``;
    with probability ``probability`` it masks floor(num * r) patches (r ~ U(ratio), at most
    ``max_masked``) at uniformly random positions, else none."""
    most = max_masked(num, ratio)

    def one(k):
        k_on, k_ratio, k_pos = jax.random.split(k, 3)
        on = jax.random.bernoulli(k_on, probability)
        r = jax.random.uniform(k_ratio, (), minval=ratio[0], maxval=ratio[1])
        count = jnp.where(on, jnp.minimum(jnp.floor(num * r).astype(jnp.int32), most), 0)
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (num,))))
        return ranks < count

    keys = jax.vmap(lambda k: jax.random.split(k, crops))(jax.random.split(key, batch))
    return jax.vmap(jax.vmap(one))(keys)


# ----------------------------------------------------------------------------- schedules


def teacher_momentum_schedule(config, run: RunInfo) -> optax.Schedule:
    d = config.dino
    return schedules.bind(
        schedules.teacher_momentum,
        total_steps=run.total_steps,
        base=d.teacher_momentum,
        final=d.teacher_momentum_end,
    )


def teacher_temp_schedule(config, run: RunInfo) -> optax.Schedule:
    d = config.dino
    return schedules.bind(
        schedules.teacher_temperature,
        warmup_steps=run.epochs_to_steps(d.warmup_teacher_temp_epochs),
        warmup_temp=d.warmup_teacher_temp,
        final_temp=d.teacher_temp,
    )


def freeze_last_layer(params, frozen: jax.Array):
    """The head's last layer behind ``stop_gradient`` where ``frozen`` (a traced bool).

    d/dp where(frozen, stop_gradient(p), p) = where(frozen, 0, 1): the gradient
    of the last layer is exactly zero while frozen, so Adam's moments stay 0
    and the layer does not move (decoupled weight decay only rescales the
    weight-normalised kernel, which leaves the outputs unchanged).
    """

    def maybe_stop(path, leaf):
        names = {str(getattr(p, "key", p)) for p in path}
        if "last_layer" in names:
            return jnp.where(frozen, jax.lax.stop_gradient(leaf), leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(maybe_stop, params)


# ----------------------------------------------------------------------------- loss


def sinkhorn_knopp(config: ml_collections.ConfigDict) -> bool:
    """DINOv2's Sinkhorn-Knopp teacher in place of centring (``dino.centering``)."""
    return config.dino.get("centering", "centre") == "sinkhorn_knopp"


def teacher_targets(config, teacher: jax.Array, center: jax.Array, temp) -> tuple:
    """(the teacher's targets [T, B, K], the next centre): softmax((teacher - centre) / temp)
    and the centre's EMA step (DINO), or three Sinkhorn-Knopp iterations over the T x B
    rows together and the centre unchanged (DINOv2's ``centering: sinkhorn_knopp``)."""
    if sinkhorn_knopp(config):
        return losses.sinkhorn_knopp_teacher(teacher, teacher_temp=temp), center
    targets = losses.teacher_distribution(teacher, center, teacher_temp=temp)
    return targets, losses.update_center(center, teacher, momentum=config.dino.center_momentum)


def _student_crops(model, params, batch_stats, views, z_globals, b):
    """The student's [S, B, K] outputs, globals (``z_globals``, already computed) first, then
    the local crops as a batch of their own (another resolution); and the batch statistics."""
    student = [parts.crops_first(z_globals, b)]
    if "local" in views:
        z, _, batch_stats = apply_train(
            model, params, batch_stats, parts.flatten_crops(views["local"])
        )
        student.append(parts.crops_first(z, b))
    return jnp.concatenate(student, axis=0), batch_stats


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    if koleo_weight(config) > 0 or ibot_weight(config) > 0 or gram_weight(config) > 0:
        return dinov2_loss(model, config, run)
    d = config.dino
    teacher_temp = teacher_temp_schedule(config, run)
    momentum = teacher_momentum_schedule(config, run)
    freeze_steps = run.epochs_to_steps(d.freeze_last_layer_epochs)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del key  # all randomness is in the views
        if freeze_steps > 0:
            params = freeze_last_layer(params, step < freeze_steps)
        g = views["global"]
        b = g.shape[0]
        # Student: globals and locals as two batches (two resolutions).
        z, _, batch_stats = apply_train(model, params, batch_stats, parts.flatten_crops(g))
        student, batch_stats = _student_crops(model, params, batch_stats, views, z, b)

        # Teacher: global crops only, no gradient; its BatchNorm runs on batch
        # statistics and the updated running statistics are dropped (they
        # follow the student's by EMA in after_update).
        teacher_state = jax.lax.stop_gradient(method_state["teacher"])
        z_t, _, _ = apply_train(
            model, teacher_state.params, teacher_state.batch_stats, parts.flatten_crops(g)
        )
        teacher = jax.lax.stop_gradient(parts.crops_first(z_t, b))  # [T, B, K]

        temp = teacher_temp(step)
        targets, new_center = teacher_targets(config, teacher, method_state["center"], temp)
        loss = losses.distillation_loss(student, targets, student_temp=d.student_temp)
        metrics = {
            **losses.distillation_monitor(student, targets, student_temp=d.student_temp),
            "center_norm": jnp.linalg.norm(new_center),
            "teacher_temp": temp,
            "teacher_momentum": momentum(teacher_state.count),
        }
        return loss, (batch_stats, {**method_state, "center": new_center}, metrics)

    return loss_fn


def masked_patches(mask: jax.Array, most: int) -> tuple[jax.Array, jax.Array]:
    """mask bool [N, P] -> (indices int32 [N, most]: the masked patches first, in order;
    valid float32 [N, most]: 1 where the index is a masked patch). Static shapes: the head
    sees ``most`` tokens per crop instead of DINOv2's variable count."""
    order = jnp.argsort(jnp.logical_not(mask).astype(jnp.int32), axis=1, stable=True)
    index = order[:, :most].astype(jnp.int32)
    return index, jnp.take_along_axis(mask, index, axis=1).astype(jnp.float32)


def _apply_tokens(model, params, batch_stats, x, patches, mask):
    """IBOTNetwork.tokens in training mode -> ((z, z_patches, h, tokens), new batch_stats)."""
    variables = {"params": params}
    if not batch_stats:
        out = model.apply(variables, x, patches, train=True, mask=mask, method="tokens")
        return out, batch_stats
    variables["batch_stats"] = batch_stats
    out, updated = model.apply(
        variables, x, patches, train=True, mask=mask, method="tokens", mutable=["batch_stats"]
    )
    return out, updated["batch_stats"]


def dinov2_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    """DINO's loss + koleo_weight x KoLeo on the [CLS] features of each global crop (summed
    over the crops) + ibot_weight x iBOT's masked-patch loss, as DINOv2's SSLMetaArch,
    + gram_weight x DINOv3's Gram anchoring from its start (computed, not added, before)."""
    d = config.dino
    teacher_temp = teacher_temp_schedule(config, run)
    momentum = teacher_momentum_schedule(config, run)
    freeze_steps = run.epochs_to_steps(d.freeze_last_layer_epochs)
    w_koleo, w_ibot, w_gram = koleo_weight(config), ibot_weight(config), gram_weight(config)
    if w_ibot > 0:
        most = max_masked(num_patches(config), tuple(d.ibot_mask_ratio))
    if w_gram > 0:
        gram_start, _ = gram_steps(config, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del key  # all randomness is in the views
        if freeze_steps > 0:
            params = freeze_last_layer(params, step < freeze_steps)
        g = views["global"]
        b, n_global = g.shape[:2]
        x = parts.flatten_crops(g)
        teacher_state = jax.lax.stop_gradient(method_state["teacher"])
        t_params, t_stats = teacher_state.params, teacher_state.batch_stats
        if w_ibot > 0:
            mask = views["mask"].reshape(b * n_global, -1)  # batch-major, as x
            patches, valid = masked_patches(mask, most)
            (z, z_patch, h, tokens), batch_stats = _apply_tokens(
                model, params, batch_stats, x, patches, mask
            )
            (z_t, z_patch_t, _, _), _ = _apply_tokens(model, t_params, t_stats, x, patches, None)
        else:
            z, aux, batch_stats = apply_train(model, params, batch_stats, x)
            h = aux["features"]
            tokens = aux.get("feature_map")
            z_t, _, _ = apply_train(model, t_params, t_stats, x)
        student, batch_stats = _student_crops(model, params, batch_stats, views, z, b)
        teacher = jax.lax.stop_gradient(parts.crops_first(z_t, b))  # [T, B, K]

        temp = teacher_temp(step)
        targets, new_center = teacher_targets(config, teacher, method_state["center"], temp)
        dino = losses.distillation_loss(student, targets, student_temp=d.student_temp)
        new_state = {**method_state, "center": new_center}
        metrics = {
            **losses.distillation_monitor(student, targets, student_temp=d.student_temp),
            "dino_loss": dino,
            "center_norm": jnp.linalg.norm(new_state["center"]),
            "teacher_temp": temp,
            "teacher_momentum": momentum(teacher_state.count),
        }
        loss = dino
        if w_koleo > 0:
            per_crop = h.reshape(b, n_global, -1)
            koleo = sum(losses.koleo_loss(per_crop[:, i]) for i in range(n_global))
            loss = loss + w_koleo * koleo
            metrics["koleo"] = koleo
        if w_ibot > 0:
            z_patch_t = jax.lax.stop_gradient(z_patch_t)
            ibot_center = method_state["ibot_center"]
            if sinkhorn_knopp(config):  # balanced over the masked patches of the batch
                patch_targets = losses.sinkhorn_knopp_teacher(
                    z_patch_t, teacher_temp=temp, valid=valid
                )
            else:
                patch_targets = losses.teacher_distribution(
                    z_patch_t, ibot_center, teacher_temp=temp
                )
                new_state["ibot_center"] = losses.update_patch_center(
                    ibot_center, z_patch_t, valid, momentum=d.center_momentum
                )
            ibot = losses.patch_distillation_loss(
                z_patch, patch_targets, valid, student_temp=d.student_temp
            )
            loss = loss + w_ibot * ibot
            metrics["ibot_loss"] = ibot
            metrics["ibot_masked_share"] = jnp.mean(mask.astype(jnp.float32))
            metrics["ibot_center_norm"] = jnp.linalg.norm(new_state["ibot_center"])
        if w_gram > 0:
            # DINOv3: the student's patch features of its (masked) global crops against
            # the Gram teacher's of the unmasked crops, from gram_start_epochs on.
            gram_params = {**t_params, "backbone": method_state["gram_teacher"]}
            _, g_aux, _ = apply_train(model, gram_params, t_stats, x)
            student_patches = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
            teacher_patches = g_aux["feature_map"].reshape(student_patches.shape)
            gram = losses.gram_loss(
                student_patches,
                jax.lax.stop_gradient(teacher_patches),
                img_level=d.gram_img_level,
                remove_neg=d.gram_remove_neg,
                remove_only_teacher_neg=d.gram_remove_only_teacher_neg,
            )
            on = step >= gram_start
            loss = loss + jnp.where(on, w_gram * gram, 0.0)
            metrics["gram_loss"] = gram
            metrics["gram_on"] = on.astype(jnp.float32)
        return loss, (batch_stats, new_state, metrics)

    return loss_fn


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated student into the teacher (params and BatchNorm statistics); with
    Gram anchoring, the Gram teacher becomes a copy of the teacher's ViT once ``step + 1``
    updates reach gram_start_epochs, then every gram_update_epochs (DINOv3's update_gram)."""
    teacher = ema.ema_teacher(teacher_momentum_schedule(config, run)).update(
        params, method_state["teacher"], batch_stats if batch_stats else None
    )
    state = {**method_state, "teacher": teacher}
    if gram_weight(config) > 0:
        start, every = gram_steps(config, run)
        done = step + 1
        refresh = (done >= start) & ((done - start) % every == 0)
        state["gram_teacher"] = jax.tree.map(
            lambda new, old: jnp.where(refresh, new, old),
            teacher.params["backbone"],
            method_state["gram_teacher"],
        )
    return params, state


# ----------------------------------------------------------------------------- monitor


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    """DINO's collapse signatures (Caron et al., 2021, section 5.3): loss or teacher entropy at
    ln K, or entropy ~0."""
    log_k = math.log(config.dino.out_dim)
    out = []
    loss = metrics.get("dino_loss", metrics.get("loss"))  # DINO's term alone with DINOv2's
    if loss is not None and abs(loss - log_k) < 0.02 * log_k:
        out.append(
            f"loss {loss:.4f} sits at ln(K) = {log_k:.4f}: teacher and student outputs are "
            "uniform (collapse); check the teacher temperature (sharpening)."
        )
    h = metrics.get("teacher_entropy")
    if h is not None and h > 0.95 * log_k:
        out.append(
            f"teacher entropy {h:.4f} is near ln(K) = {log_k:.4f}: the teacher is uniform "
            "(collapse to uniform); lower dino.teacher_temp."
        )
    hb = metrics.get("teacher_batch_entropy")
    if hb is not None and hb < 0.05 * log_k:
        out.append(
            f"entropy of the batch-mean teacher distribution {hb:.4f} is near 0 (ln(K) = "
            f"{log_k:.4f}): every image goes to the same dimension (collapse to a constant); "
            "check the centring (dino.center_momentum)."
        )
    return out


def check(values: dict) -> list[str]:
    """Combinations of DINO's fields (and its DINOv2 options) that cannot work."""
    out = parts.multi_crop_problems(values, "DINO")
    model, patch = values.get("model.name"), values.get("model.patch_size")
    if (values.get("dino.ibot_weight") or 0) > 0:
        weight = show(values["dino.ibot_weight"])
        if model is not None and patch is None:
            out.append(
                f"dino.ibot_weight={weight}: iBOT's loss is on patch tokens and needs a "
                f"ViT backbone, not model.name={model!r}; use e.g. configs/dino.py:digits,dinov2 "
                "or dino.ibot_weight=0"
            )
        if values.get("dino.ibot_mask_probability") == 0:
            out.append(
                f"dino.ibot_mask_probability=0: with dino.ibot_weight={weight} no crop is "
                "ever masked; use a probability > 0 (DINOv2: 0.5)"
            )
        ratio, crop = values.get("dino.ibot_mask_ratio"), values.get("augment.crop_size")
        if ratio is not None and patch is not None and crop is not None and crop >= patch:
            num = (crop // patch) ** 2
            if math.floor(num * ratio[1]) < 1:
                out.append(
                    f"dino.ibot_mask_ratio={show(ratio)}: masks no patch of the {num} "
                    f"of a {crop} px crop (floor({num} x {ratio[1]:g}) = 0); raise the ratio "
                    "range (DINOv2: (0.1, 0.5))"
                )
    if (values.get("dino.gram_weight") or 0) > 0:
        if model is not None and patch is None:
            out.append(
                f"dino.gram_weight={show(values['dino.gram_weight'])}: Gram anchoring compares "
                f"patch features and needs a ViT backbone, not model.name={model!r}; use e.g. "
                "configs/dino.py:digits,dinov3 or dino.gram_weight=0"
            )
        if values.get("dino.gram_remove_neg") and values.get("dino.gram_remove_only_teacher_neg"):
            out.append(
                "dino.gram_remove_neg=True: with dino.gram_remove_only_teacher_neg=True too; the "
                "two exclude each other (DINOv3 asserts it), set one of them False"
            )
    batch = values.get("batch_size")
    if (values.get("dino.koleo_weight") or 0) > 0 and batch is not None and batch < 2:
        out.append(
            f"batch_size={batch}: KoLeo (dino.koleo_weight="
            f"{show(values['dino.koleo_weight'])}) needs a nearest neighbour in the batch; use "
            "at least 2"
        )
    return out


CENTERINGS = ("centre", "sinkhorn_knopp")
IBOT = "dino.ibot_weight"  # iBOT's masking and head fields change nothing while it is 0
GRAM = "dino.gram_weight"  # Gram anchoring's fields change nothing while it is 0

DINO = Method(
    name="dino",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    # DINO evaluates the teacher, usually the better network, beside the student.
    evaluators=("knn", "linear_probe", "kmeans", "teacher_knn"),
    teacher="teacher",
    fields={
        **parts.MULTI_CROP_FIELDS,
        "dino.out_dim": WIDTH,
        "dino.hidden_dim": WIDTH,
        "dino.bottleneck_dim": WIDTH,
        "dino.num_layers": integer(1, 64),
        "dino.head_use_bn": boolean,
        "dino.norm_last_layer": boolean,
        "dino.freeze_last_layer_epochs": EPOCHS,
        "dino.student_temp": POSITIVE,
        "dino.warmup_teacher_temp": POSITIVE,
        "dino.teacher_temp": POSITIVE,
        "dino.warmup_teacher_temp_epochs": EPOCHS,
        "dino.center_momentum": MOMENTUM,
        "dino.teacher_momentum": MOMENTUM,
        "dino.teacher_momentum_end": MOMENTUM,
        # DINOv2's options, added after DINO runs were saved (off: DINO's step)
        "dino.centering": Added(one_of(CENTERINGS, "dino.centering"), before="centre"),
        "dino.koleo_weight": Added(NON_NEGATIVE, before=0.0),
        "dino.ibot_weight": Added(NON_NEGATIVE, before=0.0),
        "dino.ibot_mask_probability": Added(PROBABILITY, inert_unless=IBOT),
        "dino.ibot_mask_ratio": Added(pair(0.0, 1.0, lo_open=False), inert_unless=IBOT),
        "dino.ibot_separate_head": Added(boolean, inert_unless=IBOT),
        "dino.ibot_out_dim": Added(WIDTH, inert_unless=IBOT),
        "dino.ibot_hidden_dim": Added(WIDTH, inert_unless=IBOT),
        "dino.ibot_bottleneck_dim": Added(WIDTH, inert_unless=IBOT),
        "dino.ibot_num_layers": Added(integer(1, 64), inert_unless=IBOT),
        # DINOv3's Gram anchoring, added later still (off: the step without it)
        "dino.gram_weight": Added(NON_NEGATIVE, before=0.0),
        "dino.gram_start_epochs": Added(EPOCHS, inert_unless=GRAM),
        "dino.gram_update_epochs": Added(EPOCHS, inert_unless=GRAM),
        "dino.gram_img_level": Added(boolean, inert_unless=GRAM),
        "dino.gram_remove_neg": Added(boolean, inert_unless=GRAM),
        "dino.gram_remove_only_teacher_neg": Added(boolean, inert_unless=GRAM),
    },
    check=check,
)
