"""Face training and evaluation data.

* Data sets (:class:`FaceDataset`): identity folders (:class:`ImageFolderDataset`), CSV lists
  (:class:`CsvListDataset`), insightface RecordIO (:class:`RecordIODataset`, one file or
  shards); :func:`open_dataset` picks the right one for a path. :class:`ArrayDataset` holds
  images already in memory.
* Unreadable images are skipped, never fatal: see :func:`collate_faces` and
  :class:`SkipCounter`.
* RecordIO writing: :func:`pack_folder` (``marginface data pack``), :class:`FaceRecordWriter`.
* Verification pairs: :func:`read_verification_bin` / :func:`write_verification_bin`.
* Augmentation and tensor conversion: :class:`AugmentConfig`, :func:`build_transform`.
* Samplers: :class:`PKSampler` (P identities × K images) and :class:`ResumableSampler`, both
  deterministic, DDP-aware and resumable mid-epoch.
* The training path: :func:`make_loader` over :class:`SeededSamples` and
  :class:`SeededBatches` (each sample augmented from ``(seed, epoch, index)``); the trainer
  and the tests use the same functions.
"""

from __future__ import annotations

from marginface.data.augment import (
    AUGMENT_PRESETS,
    AugmentConfig,
    FaceTransform,
    build_transform,
    resolve_augment,
    to_tensor,
)
from marginface.data.datasets import (
    ArrayDataset,
    CsvListDataset,
    FaceBatch,
    FaceDataset,
    ImageFolderDataset,
    LabelMap,
    SeededSamples,
    SkipCounter,
    SkippedSample,
    collate_faces,
    make_loader,
    worker_init,
)
from marginface.data.images import IMAGE_EXTENSIONS, decode_image, encode_jpeg, load_image
from marginface.data.recordio import (
    FaceRecordWriter,
    IRHeader,
    PackResult,
    RecordIODataset,
    RecordReader,
    RecordWriter,
    find_shards,
    pack_folder,
    pack_record,
    unpack_record,
)
from marginface.data.samplers import PKSampler, ResumableSampler, SeededBatches
from marginface.data.sources import open_dataset
from marginface.data.verification import (
    VerificationSet,
    read_verification_bin,
    write_verification_bin,
)

__all__ = [
    "AUGMENT_PRESETS",
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "AugmentConfig",
    "CsvListDataset",
    "FaceBatch",
    "FaceDataset",
    "FaceRecordWriter",
    "FaceTransform",
    "IRHeader",
    "ImageFolderDataset",
    "LabelMap",
    "PKSampler",
    "PackResult",
    "RecordIODataset",
    "RecordReader",
    "RecordWriter",
    "ResumableSampler",
    "SeededBatches",
    "SeededSamples",
    "SkipCounter",
    "SkippedSample",
    "VerificationSet",
    "build_transform",
    "collate_faces",
    "decode_image",
    "encode_jpeg",
    "find_shards",
    "load_image",
    "make_loader",
    "open_dataset",
    "pack_folder",
    "pack_record",
    "read_verification_bin",
    "resolve_augment",
    "to_tensor",
    "unpack_record",
    "worker_init",
    "write_verification_bin",
]
