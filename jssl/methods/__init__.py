"""Method registry: a plain dict name -> Method."""

from jssl.errors import UserError
from jssl.methods.autoencoder import AUTOENCODER
from jssl.methods.barlow_twins import BARLOW_TWINS
from jssl.methods.base import HostContext, HostObject, Method, RunInfo, apply_train
from jssl.methods.byol import BYOL
from jssl.methods.context import CONTEXT
from jssl.methods.dino import DINO
from jssl.methods.equivariance import EQUIVARIANCE
from jssl.methods.ijepa import IJEPA
from jssl.methods.jigsaw import JIGSAW
from jssl.methods.lejepa import LEJEPA
from jssl.methods.mae import MAE
from jssl.methods.mocov2 import MOCOV2
from jssl.methods.mocov3 import MOCOV3
from jssl.methods.nnclr import NNCLR
from jssl.methods.recovery import COLORIZATION, DENOISING, INPAINTING
from jssl.methods.rotation import ROTATION
from jssl.methods.scan import SCAN
from jssl.methods.sela import SELA
from jssl.methods.selflabel import SELFLABEL
from jssl.methods.simclr import SIMCLR
from jssl.methods.simsiam import SIMSIAM
from jssl.methods.swav import SWAV
from jssl.methods.vae import VAE_METHOD
from jssl.methods.vicreg import VICREG
from jssl.models import EncoderWithHead

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
    "mocov2": MOCOV2,
    "mocov3": MOCOV3,
    "nnclr": NNCLR,
    "swav": SWAV,
    "byol": BYOL,
    "simsiam": SIMSIAM,
    "barlow_twins": BARLOW_TWINS,
    "vicreg": VICREG,
    "mae": MAE,
    "lejepa": LEJEPA,
    "ijepa": IJEPA,
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


__all__ = [
    "METHODS",
    "EncoderWithHead",
    "HostContext",
    "HostObject",
    "Method",
    "RunInfo",
    "apply_train",
    "get_method",
]
