"""Reading the pages of ``python -m jssl.report``: their sections and images, and the
command run in this process; for the report's tests and the methods' tests of their own
report sections."""

import os
import re

import numpy as np
from PIL import Image

from jssl import report

EVERY_RUN = ("run", "summary", "curves", "retrieval", "map", "clusters", "views")


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def assert_images_decode(folder: str, page: str) -> list[str]:
    srcs = images(page)
    assert srcs, "no images"
    for src in srcs:
        assert "/" not in src and not src.startswith("http"), src  # beside the page
        with Image.open(os.path.join(folder, src)) as im:
            assert im.format == "PNG", src
            im.load()  # the whole file decodes
            assert im.size[0] > 50 and im.size[1] > 50, (src, im.size)
            assert np.asarray(im).std() > 1.0, f"{src} is blank"
    return srcs


def assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(https?:)?//', page), "a reference off the disk"


def make(workdirs, tmp_path=None, *extra) -> tuple[str, str]:
    """Runs the command in this process; (the report folder, its page)."""
    args = [a for w in workdirs for a in ("--workdir", w)]
    if tmp_path is not None:
        args += ["--out", str(tmp_path)]
    assert report.main([*args, *extra]) == 0
    folder = str(tmp_path) if tmp_path is not None else os.path.join(workdirs[0], "report")
    with open(os.path.join(folder, "index.html"), encoding="utf-8") as f:
        return folder, f.read()
