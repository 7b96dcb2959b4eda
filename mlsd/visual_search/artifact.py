"""The visual-search artifact: what serving loads, and how a version is built.

Files: ``encoder.pt`` (state dict), ``encoder.onnx``, ``encoder.int8.onnx``, ``index.faiss``,
``catalogue.parquet`` (image_id, owner, private, unsafe, signature, label), ``images.npy``
(the catalogue's pixels by id) and ``live_images.parquet`` (the folded uploads' bytes); images
tombstoned in the live log are in none of them. The manifest's
config holds the encoder, training and index configs, its metrics the catalogue evaluation and
the ONNX / int8 parity figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore
from mlsd.drift import REFERENCE_FILE, DriftReference, build_reference
from mlsd.image import decode_image, dhash, images_to_tensor
from mlsd.index import IndexConfig, VectorIndex
from mlsd.runtime import export_onnx, make_runner, quantize_int8
from mlsd.visual_search.catalogue import CatalogueLog
from mlsd.visual_search.evaluation import evaluate_embeddings
from mlsd.visual_search.features import drift_features, to_array
from mlsd.visual_search.model import EncoderConfig, build_encoder

ENCODER_FILES = {"torch": "encoder.pt", "onnx": "encoder.onnx", "onnx-int8": "encoder.int8.onnx"}
Embed = Callable[[np.ndarray, Path], np.ndarray]


def load_encoder_module(artifact: Artifact) -> torch.nn.Module:
    """The torch encoder of an artifact; a corrupt or mismatched file is named."""
    cfg = EncoderConfig.from_dict(artifact.config.get("encoder", {}))
    model = build_encoder(cfg)
    path = artifact.file("encoder.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # corrupt or mismatched weights: name the file
        raise ArtifactError(f"cannot load encoder weights {path}: {e}") from e
    return model.eval()


def embed_in_process(images: np.ndarray, onnx_path: Path, batch_size: int = 256) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, D) with the exported model, in this process."""
    runner = make_runner("onnx", path=onnx_path, device="cpu")
    outs = [runner.run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def drift_reference(
    x: np.ndarray, emb: np.ndarray, ids: np.ndarray, index: VectorIndex, n: int = 5000
) -> DriftReference:
    """The catalogue as drift reference: its images' input features, their embeddings and,
    as the score a search would get, each image's best match other than itself."""
    pick = np.random.default_rng(0).permutation(len(x))[:n]
    scores, found = index.search(emb[pick], 2)  # (n, 2): itself first, usually
    top = np.where(found[:, 0] == ids[pick], scores[:, 1], scores[:, 0])
    return build_reference(
        features=drift_features(x[pick], np.zeros(len(pick), bool)),
        scores={"top1_similarity": top[np.isfinite(top)]},
        embeddings={"image": emb[pick]},
        source=f"{len(pick)} catalogue images (leave-one-out top-1 similarity)",
    )


def build_visual_search_artifact(
    store: ArtifactStore,
    name: str,
    model: torch.nn.Module,
    encoder_cfg: EncoderConfig,
    train_config: dict,
    catalogue_images: np.ndarray,  # (N, 28, 28) uint8
    catalogue_labels: np.ndarray | None,
    index_cfg: IndexConfig,
    live_log: str | None = None,
    objects: str | None = None,
    embed: Embed | None = None,
    extra_metrics: dict | None = None,
    data_info: dict | None = None,
) -> str:
    """Embed + index the catalogue, export ONNX fp32/int8, evaluate, commit a new version.

    ``embed(images, onnx_path)`` embeds the catalogue with the exported model: in process by
    default; the indexing job passes Ray Data batch inference."""
    t0 = time.perf_counter()
    model = model.eval().cpu()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    x = images_to_tensor(catalogue_images).numpy()  # (N, C, H, W)
    writer = store.new_version(name)
    torch.save(state, writer.path("encoder.pt"))
    export_onnx(model, torch.as_tensor(x[:2]), writer.path("encoder.onnx"))
    # a configured log that cannot be read fails the job (naming the store): an artifact built
    # without its deletions would bring deleted images back
    logdb = CatalogueLog(live_log, objects) if live_log else None
    deleted = logdb.deleted_ids() if logdb is not None else set()
    keep = ~np.isin(np.arange(len(x)), np.fromiter(deleted, np.int64, len(deleted)))
    pixels = np.where(keep[:, None, None], catalogue_images, 0).astype(np.uint8)
    np.save(writer.path("images.npy"), pixels)  # (N, H, W) by id; deleted ones blank
    x, catalogue_images = x[keep], catalogue_images[keep]
    if catalogue_labels is not None:
        catalogue_labels = np.asarray(catalogue_labels)[keep]
    emb = (embed or embed_in_process)(x, writer.path("encoder.onnx"))
    ids = np.flatnonzero(keep).astype(np.int64)
    owners = ["catalogue"] * len(x)
    private = [False] * len(x)
    unsafe = [False] * len(x)
    signatures = [dhash(img) for img in catalogue_images]
    labels = [int(v) for v in catalogue_labels] if catalogue_labels is not None else [-1] * len(x)
    folded, live_bytes = 0, []
    if logdb is not None:  # the indexing path of the book: fold live adds (deleted ones erased)
        extra_emb, extra_ids = [], []
        for _, live in logdb.since(0):
            data = logdb.image_bytes(live.meta.image_id)
            if data is None or live.meta.image_id in deleted:
                continue
            arr = to_array(
                decode_image(data, target=encoder_cfg.image_size),
                encoder_cfg.image_size,
                encoder_cfg.in_channels,
            )
            with torch.inference_mode():
                extra_emb.append(model(torch.as_tensor(arr[None])).numpy()[0])
            extra_ids.append(live.meta.image_id)
            live_bytes.append(data)
            owners.append(live.meta.owner)
            private.append(live.meta.private)
            unsafe.append(live.meta.unsafe)
            signatures.append(live.meta.signature)
            labels.append(-1)
        logdb.close()
        if extra_ids:
            emb = np.concatenate([emb, np.stack(extra_emb)])
            ids = np.concatenate([ids, np.asarray(extra_ids, dtype=np.int64)])
            folded = len(extra_ids)
    index = VectorIndex.build(emb, ids, index_cfg)
    index.save(writer.path("index.faiss"))
    drift_reference(x, emb[: len(x)], ids[: len(x)], index).save(writer.path(REFERENCE_FILE))
    import pyarrow as pa
    import pyarrow.parquet as pq

    folded_ids = ids[len(x) :]
    pq.write_table(  # the folded uploads' bytes: GET /images/{id} after the log prunes them
        pa.table({"image_id": folded_ids, "data": pa.array(live_bytes, pa.binary())}),
        writer.path("live_images.parquet"),
    )
    pq.write_table(
        pa.table(
            {
                "image_id": ids,
                "owner": owners,
                "private": private,
                "unsafe": unsafe,
                "signature": signatures,
                "label": labels,
            }
        ),
        writer.path("catalogue.parquet"),
    )
    metrics: dict = dict(extra_metrics or {})
    n = len(catalogue_images)
    if catalogue_labels is not None:
        metrics["catalogue_eval"] = evaluate_embeddings(emb[:n], np.asarray(catalogue_labels))
    # model compression: static int8 calibrated on catalogue images; parity with torch
    with torch.inference_mode():
        torch_ref = model(torch.as_tensor(x[:64])).numpy()
    metrics["onnx_vs_torch_max_abs_diff"] = float(np.abs(emb[:64] - torch_ref).max())
    calib = [x[i : i + 64] for i in range(0, min(len(x), 1024), 64)]
    quantize_int8(writer.path("encoder.onnx"), writer.path("encoder.int8.onnx"), calib)
    sample = x[: min(len(x), 1000)]
    ref = emb[: len(sample)]
    for tag, fname in (("onnx", "encoder.onnx"), ("onnx_int8", "encoder.int8.onnx")):
        out = make_runner("onnx", path=writer.path(fname), device="cpu").run(sample)
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        metrics[f"{tag}_max_abs_diff"] = float(np.abs(out - ref).max())
        metrics[f"{tag}_mean_cosine"] = float((out * ref).sum(1).mean())
    metrics["index"] = {"kind": index.kind, "size": len(index), "nprobe": index.nprobe}
    metrics["folded_live_images"] = folded
    metrics["deleted_left_out"] = len(deleted)
    metrics["index_seconds"] = time.perf_counter() - t0
    version = writer.commit(
        config={
            "encoder": encoder_cfg.to_dict(),
            "train": train_config,
            "index": index_cfg.to_dict(),
        },
        data=data_info or {},
        metrics=metrics,
    )
    return version
