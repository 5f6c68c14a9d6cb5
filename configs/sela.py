"""SeLa configs: ``--config=configs/sela.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download), cifar10
(tfds), cifar10_folder (an image folder: --config.data.path=DIR), stl10,
imagenet. Clustering scores (ACC / NMI / ARI of the lowest-loss head on the
test split) are reported as head_acc / head_nmi / head_ari.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("sela")
    common.apply_data_preset(c, preset)

    c.sela = ml_collections.ConfigDict()
    c.sela.num_heads = 10
    c.sela.num_clusters = 10  # K; > the number of classes over-clusters
    c.sela.lam = 25.0  # SeLa's lambda: Q proportional to p^lambda (Sinkhorn epsilon = 1/lambda)
    c.sela.sinkhorn_iters = 1000
    c.sela.sinkhorn_tol = 1e-4  # stop once every cluster holds N w_k within this relative error
    c.sela.num_label_updates = 20  # labelling steps spread over training (first after step 1)
    c.sela.label_schedule_power = 1.0  # update i after T (i / L)^power steps; > 1: denser early
    c.sela.label_mode = "hard"  # hard (argmax Q) | soft (Q)
    # Hard labels fill every cluster exactly (greedy rounding of Q) instead of argmax Q.
    c.sela.balanced_labels = True
    c.sela.class_weights = ()  # () = equal-size clusters; else K positive proportions
    c.sela.head_loss_momentum = 0.9  # EMA of each head's loss; the lowest picks the best head
    c.sela.max_cluster_share = 0.5  # warn when one cluster holds more of the batch

    if preset == "digits":
        c.num_epochs = 60.0
        c.optim.name = "adamw"
        c.optim.learning_rate = 1e-3  # 2e-3 and 5e-3 fit the first labels too fast
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 2.0
        c.eval.probe_epochs = 200
    elif preset in ("cifar10", "cifar10_folder"):
        # SeLa's CIFAR recipe: 80 label updates over 400 epochs. It used 10 heads x 128
        # clusters for representation learning; K = 10 gives the clustering figures.
        c.num_epochs = 400.0
        c.sela.num_label_updates = 80
        c.optim.learning_rate = 0.05
        c.optim.weight_decay = 5e-4
    elif preset == "stl10":
        c.num_epochs = 400.0
        c.sela.num_label_updates = 80
        c.optim.learning_rate = 0.05
        c.optim.weight_decay = 5e-4
    elif preset == "imagenet":
        # SeLa ImageNet: 10 heads x 3000 clusters, ResNet-50.
        c.num_epochs = 400.0
        c.sela.num_clusters = 3000
        c.sela.num_label_updates = 160
        c.sela.max_cluster_share = 0.05
        c.optim.learning_rate = 0.05
        c.optim.weight_decay = 1e-5
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.sela.num_heads = 2
        c.sela.num_label_updates = 2  # after steps 1 and 2 of the 4
        c.sela.sinkhorn_iters = 50
    return c
