"""Layers beyond the paper's: timm's norms with the constant attack on their own normalized activation
(`timm_norms`), two BatchNorms that act on batch noise itself (`batch`) and the DAS attention gate
(`das`). Registered in `noiseattack.zoo` as evonorm-b0, evonorm-s0, frn, rms, gbn, brn and das."""

from .batch import BatchRenorm, GhostBatchNorm
from .das import DAS
from .timm_norms import EvoNormB0, EvoNormS0, FilterResponseNorm, RmsNorm

__all__ = ["BatchRenorm", "DAS", "EvoNormB0", "EvoNormS0", "FilterResponseNorm", "GhostBatchNorm", "RmsNorm"]
