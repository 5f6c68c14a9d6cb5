"""``build_report(workdirs)``: the report page of one run, or of several side by side."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from jssl.report import curves, pictures, runlog
from jssl.report.html import Section, esc, number, page, table, write

MAP_METHODS = ("pca", "tsne")


def _wall_time(log: runlog.RunLog) -> str:
    if not log.sessions:
        return "not recorded (no run_info.json: trained before jssl recorded it)"
    seconds = log.train_seconds
    ends = [s for s in log.sessions if s["seconds"] is None]
    text = f"{seconds:.1f} s training in {len(log.sessions)} session(s)"
    if ends:
        text += f" ({len(ends)} without an end: killed)"
    if log.evaluation and "eval_seconds" in log.evaluation:
        text += f" + {log.evaluation['eval_seconds']:.1f} s final evaluation"
    return text


def _facts(log: runlog.RunLog) -> dict[str, str]:
    """A run's overview rows: name -> HTML."""
    c, last = log.config, (log.sessions[-1] if log.sessions else {})
    versions = ", ".join(f"{k} {v}" for k, v in last.get("versions", {}).items())
    return {
        "workdir": esc(log.workdir),
        "method / model": esc(f"{c.get('method')} / {c.get('model', {}).get('name')}"),
        "data": esc(json.dumps({k: v for k, v in c.get("data", {}).items() if v})),
        "steps evaluated": number(log.eval_step),
        "batch size": number(c.get("batch_size")),
        "wall time": esc(_wall_time(log)),
        "devices": esc(last.get("devices", "not recorded")),
        "processes": number(last.get("process_count")),
        "versions": esc(versions or "not recorded"),
    }


def overview(logs: list[runlog.RunLog]) -> Section:
    """Per run, a column: where, what, how long, on which devices and versions; its config."""
    facts = [_facts(log) for log in logs]
    rows = [(key, *(f[key] for f in facts)) for key in facts[0]]
    body = [table(["", *(log.name for log in logs)], rows)]
    for log in logs:
        text = esc(json.dumps(log.config, indent=2, sort_keys=True))
        body.append(
            f"<details><summary>config.json of {esc(log.name)}</summary><pre>{text}</pre></details>"
        )
    return Section("run", "Run", "\n".join(body))


def _change(t, u) -> str:
    if t is None or u is None:
        return "–"
    d = t - u
    cls = "up" if d > 0 else "down" if d < 0 else ""
    return f'<span class="{cls}">{d:+.4f}</span>'


def summary(logs: list[runlog.RunLog]) -> Section:
    """The final evaluation against the untrained network's; several runs side by side."""
    labels: dict[str, str] = {}
    for log in logs:
        labels.update(log.labels)
    keys = [k for log in logs for k in (log.evaluation or {}) if k != "eval_seconds"]
    keys = list(dict.fromkeys(keys))
    labelled = [k for k in labels if k in keys]  # the printed summary table's rows
    others = [k for k in keys if k not in labels]
    if len(logs) == 1:
        log = logs[0]
        trained, untrained = log.evaluation or {}, log.untrained or {}
        header = ["metric", "untrained", f"step {log.eval_step}", "change"]
        row = lambda k: (
            labels.get(k, k),
            number(untrained.get(k)),
            number(trained.get(k)),
            _change(trained.get(k), untrained.get(k)),
        )
    else:
        header = ["metric"] + [f"{log.name} (untrained → step {log.eval_step})" for log in logs]

        def row(k):
            cells = []
            for log in logs:
                t, u = (log.evaluation or {}).get(k), (log.untrained or {}).get(k)
                cells.append(
                    f"{number(t)}"
                    + (f" <small>(from {number(u)})</small>" if u is not None else "")
                )
            return (labels.get(k, k), *cells)

    if not keys:
        body = '<p class="note">No final evaluation yet: the run has not trained to its end.</p>'
        return Section("summary", "Summary", body)
    body = [table(header, [row(k) for k in labelled])]
    if not any(log.untrained for log in logs):
        body.append(
            '<p class="note">No evaluation of the untrained network (config.eval.untrained '
            "was False).</p>"
        )
    if others:
        body.append("<h3>More figures of the evaluation (JSON only)</h3>")
        body.append(table(header, [row(k) for k in others]))
    return Section("summary", "Summary", "\n".join(body))


# What a python -m jssl.cluster metrics.json holds that the report reads.
CLUSTER_KEYS = {"method", "k", "num_classes", "metrics", "eval_features"}


def read_clusterings(folders: list[str]) -> list[tuple[str, dict]]:
    """(folder, metrics.json) of each ``python -m jssl.cluster --out`` folder."""
    from jssl.errors import UserError

    found = []
    for folder in folders:
        path = os.path.join(os.path.abspath(os.path.expanduser(folder)), "metrics.json")
        try:
            with open(path) as f:
                m = json.load(f)
            if not CLUSTER_KEYS <= set(m):
                raise ValueError(f"no {', '.join(sorted(CLUSTER_KEYS - set(m)))}")
        except (OSError, ValueError, TypeError) as e:
            raise UserError(
                f"--cluster={folder}: no readable metrics.json ({type(e).__name__}: {e}); give "
                "a folder written by python -m jssl.cluster --out"
            ) from None
        found.append((os.path.dirname(path), m))
    return found


def clusterings(found: list[tuple[str, dict]], out: str) -> Section:
    """A row per ``jssl.cluster`` result: method, K, ACC, NMI, ARI, AMI, each space's RankMe,
    and a link to the clustering's own page (confusion matrix, sizes, images)."""
    from jssl.cluster.select import acc_kind

    rows = []
    for folder, m in found:
        kind = acc_kind(m["k"], m["num_classes"])
        own = os.path.join(folder, "report.html")
        link = (
            f'<a href="{esc(os.path.relpath(own, out))}">clusters</a>'
            if os.path.exists(own)
            else "–"
        )
        ranks = ", ".join(f"{r:.1f}" for r in m.get("rankme", [])) or "–"
        rows.append(
            (
                os.path.basename(folder),
                esc(m["method"]),
                f"{m['k']} ({m['num_classes']} classes)",
                f"{m['metrics']['acc']:.4f} ({kind})",
                *(m["metrics"][n] for n in ("nmi", "ari", "ami")),
                ranks,
                esc(m["eval_features"]),
                link,
            )
        )
    header = ["folder", "method", "K", "ACC", "NMI", "ARI", "AMI", "RankMe", "scored on", "page"]
    note = (
        '<p class="note">python -m jssl.cluster on cached frozen features: trained without '
        "labels, scored on the files named.</p>"
    )
    return Section("clusterings", "Clustering heads", table(header, rows) + note)


def run_sections(workdir: str, out: str, prefix: str, map_method: str) -> list[Section]:
    """The pictures that need the restored network."""
    from jssl.experiment import restore_run

    run = restore_run(workdir)
    feats = pictures.Features(run)
    found = [
        pictures.retrieval(run, feats, out, prefix),
        pictures.embedding_map(run, feats, out, prefix, map_method),
        pictures.clustering(run, feats, out, prefix),
        pictures.augmentation_views(run, out, prefix),
        pictures.method_pictures(run, out, prefix),
    ]
    return [s for s in found if s is not None]


def side_by_side(logs: list[runlog.RunLog], found: list[list[Section]]) -> list[Section]:
    """A section per kind of picture with the runs in columns, in the runs' order (each
    column headed by its run's name; "none" where a run has no such picture)."""
    kinds: dict[str, str] = {}  # the id without its run prefix -> title, first seen first
    by_run = []
    for i, sections in enumerate(found):
        own = {s.id.removeprefix(f"run{i}_"): s for s in sections}
        kinds.update({k: s.title for k, s in own.items() if k not in kinds})
        by_run.append(own)
    out = []
    for kind, title in kinds.items():
        columns = []
        for log, own in zip(logs, by_run, strict=True):
            body = own[kind].body if kind in own else '<p class="note">none for this run</p>'
            columns.append(f"<div><h3>{esc(log.name)}</h3>\n{body}</div>")
        grid = f'<div class="runs" style="--runs: {len(logs)}">' + "\n".join(columns) + "</div>"
        out.append(Section(kind, title, grid))
    return out


def build_report(
    workdirs: list[str],
    out: str | None = None,
    *,
    map_method: str = "pca",
    cluster: Sequence[str] = (),
) -> str:
    """Writes ``out``/index.html (default: the first workdir's report/) and its PNGs; returns
    the page's path. Each workdir is checked first (``validate_saved_run``), and each
    ``cluster`` folder (``python -m jssl.cluster --out``) adds a row to a last section."""
    from jssl import validation
    from jssl.errors import UserError

    if not workdirs:
        raise UserError("No run to report on: pass --workdir W (repeat it to compare runs).")
    if map_method not in MAP_METHODS:
        raise UserError(f"--map={map_method!r}: use one of {', '.join(MAP_METHODS)}.")
    workdirs = [os.path.abspath(os.path.expanduser(w)) for w in workdirs]
    for w in workdirs:
        validation.validate_saved_run(w)
    clustered = read_clusterings(list(cluster))
    out = os.path.abspath(out or os.path.join(workdirs[0], "report"))
    os.makedirs(out, exist_ok=True)
    logs = runlog.read_runs(workdirs)
    sections = [overview(logs), summary(logs), curves.curves(logs, out)]
    many = len(workdirs) > 1
    found = [
        run_sections(w, out, f"run{i}_" if many else "", map_method) for i, w in enumerate(workdirs)
    ]
    sections += side_by_side(logs, found) if many else found[0]
    if clustered:
        sections.append(clusterings(clustered, out))
    names = ", ".join(log.name for log in logs)
    methods = ", ".join(str(log.config.get("method")) for log in logs)
    title = f"jssl report: {names}" if many else f"jssl report: {methods} run {names}"
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    subtitle = f"Made {made} by python -m jssl.report from {', '.join(workdirs)}."
    return write(os.path.join(out, "index.html"), page(title, sections, subtitle=subtitle))
