"""A config's data fields checked: the source and its fields, then its path on disk.

``jssl.validation`` runs these with the rest of the config's checks.
"""

from __future__ import annotations

import os

from jssl.checks import MISSING, get, show


def source_problems(config, prefix: str = "") -> list[str]:
    """``config.data.name`` and the fields its source needs."""
    from jssl.data import SOURCES

    name = get(config, "data.name")
    if name is MISSING:
        return []
    if not isinstance(name, str) or name not in SOURCES:
        # the loader's wording: "unknown dataset source 'x'; known sources: [...]"
        return [
            f"{prefix}data.name={show(name)}: unknown dataset source {name!r}; known sources: "
            f"{sorted(SOURCES)}"
        ]
    out = []
    if name == "image_folder" and get(config, "data.path") in ("", MISSING):
        out.append(
            f"{prefix}data.path='': the image_folder source needs --config.data.path=DIR "
            "(DIR/train/<class>/*, DIR/test/<class>/*)"
        )
    if name == "arrayrecord" and get(config, "data.path") in ("", MISSING):
        out.append(
            f"{prefix}data.path='': the arrayrecord source needs --config.data.path=OUT, a "
            "folder made by python -m jssl.data.prepare --source=DIR --out=OUT"
        )
    if name == "tfds" and get(config, "data.tfds_name") in ("", MISSING):
        out.append(
            f"{prefix}data.tfds_name='': the tfds source needs a dataset name, e.g. "
            "--config.data.tfds_name=cifar10"
        )
    return out


def path_problems(config, prefix: str = "") -> list[str]:
    """``config.data.path`` against the file system: a folder, or finished prepared data."""
    name = get(config, "data.name")
    if name not in ("image_folder", "arrayrecord"):
        return []
    path = get(config, "data.path")
    if not isinstance(path, str) or not path:
        return []  # reported by config_problems
    if name == "arrayrecord":
        from jssl.data.arrayrecord import META

        if not os.path.exists(os.path.join(os.path.expanduser(path), META)):
            return [
                f"{prefix}data.path={path!r}: holds no finished prepared data (no {META}); make "
                f"it (or finish it: it resumes) with python -m jssl.data.prepare --source=DIR "
                f"--out={path}"
            ]
        return []
    if not os.path.isdir(os.path.expanduser(path)):
        return [
            f"{prefix}data.path={path!r}: image folder {path} does not exist or is not a "
            "directory; give DIR holding DIR/train/<class>/* and DIR/test/<class>/*"
        ]
    return []
