"""marginface: face recognition by learned similarity.

Subpackages, one concept each:

- ``marginface.losses``: margin heads (Softmax, NormFace, SphereFace, CosFace, ArcFace, ...),
  triplet loss with online mining, centre and inter-class losses.
- ``marginface.backbones``: embedding networks (IResNet, MobileFaceNet) in a registry.
- ``marginface.data``: datasets, RecordIO, samplers and augmentation.
- ``marginface.train``: the training engine.
- ``marginface.eval``: verification and identification protocols, threshold calibration.
- ``marginface.decision``: identification's rules (the policy and its precedence, operating
  points from the card's impostor table, the k-NN vote), used by the gallery and by ``eval``.
- ``marginface.align``: face detection and five-point alignment.
- ``marginface.embed``: embedding models behind one API, and the face pipeline.
- ``marginface.gallery``: enrolment, search and deletion over pluggable stores.
- ``marginface.serve``: the REST service and its web page.
- ``marginface.plots``: figures that show what the losses do.

Importing the package does no work; import the subpackage you need.
"""

__version__ = "0.1.0"
