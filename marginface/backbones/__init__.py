"""Face-embedding backbones behind one registry.

``create("iresnet50", embedding_dim=512)`` builds a model whose state-dict keys and shapes
equal insightface arcface_torch's, so released ``backbone.pth`` files load with
``strict=True``. Names: ``iresnet18/34/50/100/200`` (aliases ``r18`` ...), ``mbf`` (alias
``mobilefacenet``), ``mbf_large`` and the test network ``tiny``.

Input ``(B, 3, H, W)`` float, normalised as the model card says (112×112 by default); output
``(B, D)``, not normalised.
"""

from __future__ import annotations

from marginface.backbones import iresnet, mobilefacenet, tiny  # noqa: F401  (register models)
from marginface.backbones.iresnet import IBasicBlock, IResNet
from marginface.backbones.mobilefacenet import MobileFaceNet
from marginface.backbones.registry import (
    canonical_name,
    create,
    is_model,
    list_models,
    model_info,
    register_model,
    takes_input_size,
)
from marginface.backbones.tiny import TinyNet
from marginface.backbones.weights import infer_architecture, load_backbone, load_state_dict_file

__all__ = [
    "IBasicBlock",
    "IResNet",
    "MobileFaceNet",
    "TinyNet",
    "canonical_name",
    "create",
    "infer_architecture",
    "is_model",
    "list_models",
    "load_backbone",
    "load_state_dict_file",
    "model_info",
    "register_model",
    "takes_input_size",
]
