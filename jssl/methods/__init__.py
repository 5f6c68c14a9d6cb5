"""Method registry: a plain dict name -> Method."""

from jssl.errors import UserError
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.methods.dino import DINO
from jssl.methods.scan import SCAN
from jssl.methods.sela import SELA
from jssl.methods.simclr import SIMCLR

METHODS: dict[str, Method] = {"dino": DINO, "scan": SCAN, "sela": SELA, "simclr": SIMCLR}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


__all__ = ["METHODS", "EncoderWithHead", "Method", "apply_train", "get_method"]
