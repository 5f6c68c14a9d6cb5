"""Method registry: a plain dict name -> Method."""

from jssl.errors import UserError
from jssl.methods.autoencoder import AUTOENCODER
from jssl.methods.base import EncoderWithHead, HostContext, Method, RunInfo, apply_train
from jssl.methods.context import CONTEXT
from jssl.methods.dino import DINO
from jssl.methods.equivariance import EQUIVARIANCE
from jssl.methods.jigsaw import JIGSAW
from jssl.methods.recovery import COLORIZATION, DENOISING, INPAINTING
from jssl.methods.rotation import ROTATION
from jssl.methods.scan import SCAN
from jssl.methods.sela import SELA
from jssl.methods.selflabel import SELFLABEL
from jssl.methods.simclr import SIMCLR
from jssl.methods.vae import VAE_METHOD

METHODS: dict[str, Method] = {
    "dino": DINO,
    "scan": SCAN,
    "selflabel": SELFLABEL,
    "sela": SELA,
    "simclr": SIMCLR,
    "rotation": ROTATION,
    "denoising": DENOISING,
    "inpainting": INPAINTING,
    "colorization": COLORIZATION,
    "autoencoder": AUTOENCODER,
    "jigsaw": JIGSAW,
    "context": CONTEXT,
    "equivariance": EQUIVARIANCE,
    "vae": VAE_METHOD,
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


__all__ = [
    "METHODS",
    "EncoderWithHead",
    "HostContext",
    "Method",
    "RunInfo",
    "apply_train",
    "get_method",
]
