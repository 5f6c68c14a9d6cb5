"""The report's pictures of a restored run: retrieval, embedding map, clusters, views, and the
method's own pictures (attention maps, reconstructions).

Every forward pass goes through the run's ``Predictor`` (``RestoredRun.predict``);
clustering scores and matchings through ``jssl.evaluation``. Each function
writes its PNGs into ``out`` (names starting with ``prefix``) and returns the
``Section`` that shows them, or None when the run has no such picture.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from jssl import data, evaluation, plotting
from jssl.errors import UserError
from jssl.methods.base import NO_HOST
from jssl.report.html import Section, esc, image

NUM_QUERIES = 8
NUM_NEIGHBORS = 8
MAX_RETRIEVAL_TRAIN = 2000  # training images searched (a fixed subset, as the evaluation's)
MAX_MAP_POINTS = 1000
MAX_CLUSTER_TEST = 2000
CONFIDENT_PER_CLUSTER = 8
MAX_CLUSTER_ROWS = 20
NUM_VIEW_EXAMPLES = 4
CLUSTERING_EVALUATORS = ("cluster_heads", "kmeans")


def network_of(run) -> str:
    """The network the method evaluates by kNN: DINO's and MoCo's EMA teacher, else the
    trained network."""
    return run.experiment.method.default_network


class Features:
    """The run's evaluation representation of fixed subsets of its splits, computed once."""

    def __init__(self, run):
        self.run = run
        config = run.config
        self.network = network_of(run)
        self.representation = config.eval.get("representation", "features")
        cap = min(config.eval.max_train_examples or MAX_RETRIEVAL_TRAIN, MAX_RETRIEVAL_TRAIN)
        self.train = data.take_subset(run.dataset.train, cap, seed=config.seed)
        self.test = data.take_subset(run.dataset.test, MAX_CLUSTER_TEST, seed=config.seed)

    @functools.cached_property
    def train_features(self) -> np.ndarray:
        return self.run.predict(self.train, self.representation, self.network)

    @functools.cached_property
    def test_features(self) -> np.ndarray:
        return self.run.predict(self.test, self.representation, self.network)


def _save(fig, out: str, name: str) -> str:
    plotting.save(fig, os.path.join(out, name))
    return name


def _queries(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` test indices, one per class in turn (the first example of each class first)."""
    picked: list[int] = []
    classes = np.unique(labels)
    rank = 0
    while len(picked) < min(n, len(labels)):
        for c in classes:
            members = np.flatnonzero(labels == c)
            if rank < len(members) and len(picked) < n:
                picked.append(int(members[rank]))
        rank += 1
    return np.asarray(picked)


def retrieval(run, feats: Features, out: str, prefix: str) -> Section:
    """Test queries and their nearest training images (cosine), framed by label agreement."""
    train = np.asarray(evaluation.l2_normalize(feats.train_features))
    test_labels = np.asarray(feats.test.labels)
    queries = _queries(test_labels, NUM_QUERIES)
    q = np.asarray(evaluation.l2_normalize(feats.test_features[queries]))
    k = min(NUM_NEIGHBORS, len(train))
    neighbours = np.argsort(-(q @ train.T), axis=1, kind="stable")[:, :k]  # [Q, k]
    train_labels = np.asarray(feats.train.labels)
    names = run.dataset.class_names
    rows, frames, agree = [], [], []
    for qi, nb in zip(queries, neighbours, strict=True):
        same = train_labels[nb] == test_labels[qi]
        agree.append(same.mean())
        rows.append([feats.test.get(np.array([qi]))[0], *feats.train.get(nb)])
        frames.append([None] + [plotting.GOOD if s else plotting.BAD for s in same])
    fig = plotting.image_grid_figure(
        rows,
        row_titles=[str(names[test_labels[i]]) for i in queries],
        col_titles=["query"] + [f"#{j + 1}" for j in range(k)],
        frames=frames,
        title=f"{k} nearest training images of test queries ({feats.network}, "
        f"{feats.representation})",
    )
    name = _save(fig, out, f"{prefix}retrieval.png")
    caption = (
        f"Cosine similarity in the {feats.network}'s {feats.representation}, among "
        f"{len(train)} training images; green frame: same label as the query, red: another. "
        f"{100 * float(np.mean(agree)):.1f}% of the neighbours shown share the query's label."
    )
    return Section(f"{prefix}retrieval", "Nearest-neighbour retrieval", image(name, "", caption))


def embedding_map(run, feats: Features, out: str, prefix: str, method: str = "pca") -> Section:
    """A 2-D map (PCA or t-SNE, scikit-learn) of test embeddings coloured by class."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = feats.test_features[:MAX_MAP_POINTS]
    labels = np.asarray(feats.test.labels)[:MAX_MAP_POINTS]
    x = np.asarray(evaluation.l2_normalize(x), np.float64)
    if method == "tsne":
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x)
        what = f"t-SNE (perplexity {perplexity:g})"
    else:
        pca = PCA(2, random_state=0).fit(x)
        points = pca.transform(x)
        share = 100 * float(pca.explained_variance_ratio_.sum())
        what = f"PCA (the 2 components explain {share:.1f}% of the variance)"
    fig = plotting.scatter_figure(
        points,
        labels,
        class_names=run.dataset.class_names,
        title=f"{len(x)} test images, {feats.network} {feats.representation}: {what}",
    )
    name = _save(fig, out, f"{prefix}embedding_map.png")
    caption = (
        f"{what} of L2-normalised embeddings, coloured by the true class (unused in training)."
    )
    return Section(f"{prefix}map", "Embedding map", image(name, "", caption))


def _cluster_predictions(run, feats: Features) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(cluster [N], confidence [N], number of clusters, what) on the test subset."""
    method = run.experiment.method
    if "cluster_heads" in method.evaluators:
        best = int(np.argmin(jax.device_get(run.state.method_state["head_loss"])))
        logits = run.predict(feats.test, evaluation.evaluators.head_logits)[:, best]  # [N, K]
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        what = f"clustering head {best} (lowest training loss), confidence = its softmax"
        return probs.argmax(-1), probs.max(-1), logits.shape[-1], what
    x = np.asarray(evaluation.l2_normalize(feats.test_features))
    k = run.dataset.num_classes
    clusters = np.asarray(evaluation.kmeans(x, num_clusters=k, seed=run.config.seed))
    centres = np.stack(
        [x[clusters == j].mean(0) if np.any(clusters == j) else x[0] for j in range(k)]
    )
    centres = np.asarray(evaluation.l2_normalize(centres))
    confidence = np.sum(x * centres[clusters], axis=-1)
    what = (
        f"k-means ({k} clusters) on the {feats.network}'s {feats.representation}, "
        "confidence = cosine to the cluster's centre"
    )
    return clusters, confidence, k, what


def _frame(matched: int | None, label: int) -> str | None:
    if matched is None:
        return None
    return plotting.GOOD if label == matched else plotting.BAD


def clustering(run, feats: Features, out: str, prefix: str) -> Section | None:
    """Hungarian-matched confusion matrix, cluster sizes and each cluster's most confident
    test images (for methods evaluated by clustering heads or k-means)."""
    if not set(CLUSTERING_EVALUATORS) & set(run.experiment.method.evaluators):
        return None
    pred, confidence, k, what = _cluster_predictions(run, feats)
    return cluster_section(
        pred, confidence, np.asarray(feats.test.labels), feats.test,
        num_clusters=k, class_names=run.dataset.class_names, what=what, out=out, prefix=prefix,
    )  # fmt: skip


def cluster_section(
    pred, confidence, labels, images, *, num_clusters: int, class_names, what: str, out: str,
    prefix: str, split: str = "test",
) -> Section:  # fmt: skip
    """The clusters of ``pred`` [N] against ``labels`` [N]: the matched confusion matrix, the
    cluster sizes and each cluster's most ``confidence``-ordered images (``images.get(rows)``).
    The title's ACC is Hungarian when K equals the classes, else many-to-one as well."""
    c, k = len(class_names), num_clusters
    counts = dict(num_classes=c, num_clusters=k)
    acc = float(evaluation.cluster_accuracy(labels, pred, **counts))
    nmi = float(evaluation.nmi(labels, pred, **counts))
    ari = float(evaluation.ari(labels, pred, **counts))
    many = ""
    if k != c:
        many_acc = float(evaluation.cluster_accuracy_many_to_one(labels, pred, **counts))
        many = f"many-to-one ACC {many_acc:.3f}, "
    matrix, order = evaluation.matched_confusion_matrix(labels, pred, **counts)
    names = [str(n) for n in class_names]
    fig = plotting.confusion_matrix_figure(
        matrix,
        row_names=names,
        col_names=[str(j) for j in order],
        title=f"{len(labels)} {split} images: {many}ACC {acc:.3f}, NMI {nmi:.3f}, ARI {ari:.3f}",
    )
    confusion = _save(fig, out, f"{prefix}confusion.png")
    sizes = np.asarray(evaluation.cluster_sizes(pred, num_clusters=k))[order]
    summary = evaluation.cluster_size_summary(sizes)
    fig = plotting.sizes_figure(
        sizes,
        names=[str(j) for j in order],
        title=f"largest cluster {100 * summary['largest_share']:.1f}% of the images, "
        f"{summary['empty_clusters']} empty, {summary['effective_clusters']:.1f} effective",
    )
    size_png = _save(fig, out, f"{prefix}cluster_sizes.png")
    rows, frames, titles = [], [], []
    for col, cluster in enumerate(order[:MAX_CLUSTER_ROWS]):
        members = np.flatnonzero(pred == cluster)
        if len(members) == 0:
            continue
        top = members[np.argsort(-confidence[members], kind="stable")[:CONFIDENT_PER_CLUSTER]]
        matched = col if col < c else None  # the class matched to this cluster
        rows.append(list(images.get(top)))
        frames.append([_frame(matched, lb) for lb in labels[top]])
        titles.append(f"{cluster}" + (f" → {names[matched]}" if matched is not None else ""))
    fig = plotting.image_grid_figure(
        rows, row_titles=titles, frames=frames, title=f"most confident {split} images per cluster"
    )
    confident = _save(fig, out, f"{prefix}cluster_images.png")
    body = "\n".join(
        [
            f'<p class="note">{esc(what)}; columns of the matrix: clusters, the one matched to '
            "each class (Hungarian) first.</p>",
            image(confusion, "matched confusion matrix"),
            image(
                size_png,
                "cluster sizes",
                f"{split.capitalize()} images per cluster (dashed: balanced size).",
            ),
            image(
                confident,
                "most confident images",
                "Row: a cluster and its matched class; green frame: the image is of that class.",
            ),
        ]
    )
    return Section(f"{prefix}clusters", "Clusters", body)


def _host_for_views(run) -> str | None:
    """Prepares the method's host object when its views need it (SCAN's neighbour images);
    returns why the views cannot be shown, or None."""
    from jssl.experiment import restore_run, same_data

    exp = run.experiment
    if exp.method.prepare is None or exp.host is not NO_HOST:
        return None
    ref = run.config.init_from.workdir
    init_run = None
    if ref:
        path = os.path.join(run.workdir, ref[len("stage:") :]) if ref.startswith("stage:") else ref
        try:
            source = restore_run(path, devices=list(exp.mesh.devices.flat))
        except UserError as e:
            return f"the views need the init_from run {path}, which cannot be opened ({e})"
        if same_data(source.config, run.config):
            source = restore_run(path, devices=list(exp.mesh.devices.flat), dataset=run.dataset)
        init_run = source
    exp.prepare_host(init_run)
    return None


def _view_leaves(views) -> list[tuple[str, np.ndarray]]:
    """(name, array) of every image-like leaf: [B, H, W, C] or [B, V, H, W, C], C in (1, 3)."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(views)[0]:
        a = np.asarray(jax.device_get(leaf))
        name = jax.tree_util.keystr(path) or "view"
        if a.ndim == 4 and a.shape[-1] in (1, 3):
            out.append((name, a))
        elif a.ndim == 5 and a.shape[-1] in (1, 3):
            out += [(f"{name}[{v}]", a[:, v]) for v in range(a.shape[1])]
    return out


def augmentation_views(run, out: str, prefix: str) -> Section:
    """The views the train step made of the first training batch (step 0): the method's
    ``make_views`` with the step's key, on the step's batch."""
    why = _host_for_views(run)
    if why is not None:
        return Section(f"{prefix}views", "Augmentation views", f'<p class="note">{esc(why)}</p>')
    exp, state, config = run.experiment, run.state, run.config
    batch = exp.global_batch(0)
    view_key = jax.random.split(jax.random.fold_in(state.rng, 0))[0]  # as jssl.train_step
    make = jax.jit(lambda key, batch: exp.method.make_views(key, batch, config))
    leaves = _view_leaves(make(view_key, batch))
    if not leaves:
        note = '<p class="note">The views of this method hold no images.</p>'
        return Section(f"{prefix}views", "Augmentation views", note)
    images = np.asarray(jax.device_get(batch["image"]))
    n = min(NUM_VIEW_EXAMPLES, len(images))
    rows = [[images[i]] + [a[i] for _, a in leaves if i < len(a)] for i in range(n)]
    fig = plotting.image_grid_figure(
        rows,
        col_titles=["image"] + [name for name, _ in leaves],
        title=f"{config.method} views of the first training batch (step 0)",
    )
    name = _save(fig, out, f"{prefix}views.png")
    shapes = ", ".join(f"{n_} {tuple(a.shape)}" for n_, a in leaves)
    caption = f"Row: a training image and the views the step computes from it ({shapes})."
    return Section(f"{prefix}views", "Augmentation views", image(name, "", caption))


def method_pictures(run, out: str, prefix: str) -> Section | None:
    """The method's own pictures: ViT [CLS] attention maps, decoder reconstructions."""
    from jssl import visualize

    exp, state = run.experiment, run.state
    parts = []
    test = run.dataset.test
    if "vit" in run.config.model.name:
        network = network_of(run)
        images = test.get(np.arange(min(6, len(test))))
        maps = visualize.attention_maps(exp, state, images, network=network)
        rows = [[img] + [plotting.colorize(m) for m in maps[i]] for i, img in enumerate(images)]
        fig = plotting.image_grid_figure(
            rows,
            col_titles=["image"] + [f"head {h}" for h in range(maps.shape[1])],
            title=f"[CLS] attention of the last block ({network})",
        )
        name = _save(fig, out, f"{prefix}attention.png")
        parts.append(image(name, "attention maps", "Per head, min-max scaled (inferno)."))
    try:
        rows = visualize.picture_rows(exp, state, num=8)
    except UserError:  # not a decoder method
        rows = None
    if rows is not None:
        rows = [list(np.asarray(r)) for r in rows]
        title = f"{run.config.method}: inputs and outputs"
        fig = plotting.image_grid_figure(rows, title=title)
        name = _save(fig, out, f"{prefix}reconstructions.png")
        caption = (
            f"The rows python -m jssl.visualize reconstructions draws for {run.config.method}."
        )
        parts.append(image(name, "reconstructions", caption))
    if not parts:
        return None
    return Section(f"{prefix}method", "The method's pictures", "\n".join(parts))
