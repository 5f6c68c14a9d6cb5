"""Backbones, heads and the pretext tasks' networks.

Every backbone's ``__call__(x [B, H, W, C], *, train)`` returns
``(features [B, D] float32, aux)`` where ``features`` is the pooled pre-projection
representation and ``aux["feature_map"]`` the last spatial map ([B, h, w, C']); ViTs
also give ``aux["cls"]`` and, when asked, ``aux["attention"]`` [B, heads, T, T].
Every module takes ``dtype`` (compute dtype); parameters are always float32.
"""

from jssl.models.autoencoders import VAE, Autoencoder, EncoderDecoder
from jssl.models.cluster_heads import ClusterHeads
from jssl.models.convnet import ConvNet
from jssl.models.decoders import Decoder, VectorDecoder
from jssl.models.heads import DINOHead, MLPHead, WeightNormDense
from jssl.models.layers import batch_norm
from jssl.models.networks import EncoderWithHead, PrototypeNet
from jssl.models.pretext_heads import (
    AttentionPool,
    PartsClassifier,
    SetClassifierHead,
    TransformClassifier,
)
from jssl.models.registry import MODELS, count_params, create_model, weight_decay_mask
from jssl.models.resnet import BasicBlock, BottleneckBlock, ResNet
from jssl.models.vit import MultiHeadAttention, ViT, interpolate_pos_embed

__all__ = [
    "ClusterHeads",
    "MODELS",
    "VAE",
    "AttentionPool",
    "Autoencoder",
    "BasicBlock",
    "BottleneckBlock",
    "ConvNet",
    "Decoder",
    "DINOHead",
    "EncoderWithHead",
    "EncoderDecoder",
    "MLPHead",
    "MultiHeadAttention",
    "PartsClassifier",
    "PrototypeNet",
    "ResNet",
    "SetClassifierHead",
    "TransformClassifier",
    "VectorDecoder",
    "ViT",
    "WeightNormDense",
    "batch_norm",
    "count_params",
    "create_model",
    "interpolate_pos_embed",
    "weight_decay_mask",
]
