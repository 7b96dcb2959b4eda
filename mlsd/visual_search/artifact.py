"""The visual-search artifact: what serving loads, and how a version is built.

Files: ``encoder.pt`` (state dict), ``encoder.onnx``, ``encoder.int8.onnx``, ``index.faiss``,
``catalogue.parquet`` (image_id, owner, private, unsafe, signature, label, file), the
catalogue's images (``images.npy``, the demo's small pixels by id, or ``images.parquet``, a
user's photos' bytes by id) and ``live_images.parquet`` (the folded uploads' bytes); images
tombstoned in the live log are in none of them. The manifest's
config holds the encoder, training and index configs, its metrics the catalogue evaluation and
the ONNX / int8 parity figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore, ArtifactWriter
from mlsd.data.sources import BadRows, DataError
from mlsd.drift import REFERENCE_FILE, DriftReference, build_reference
from mlsd.image import InvalidImage, decode_image, dhash, images_to_tensor
from mlsd.index import IndexConfig, VectorIndex
from mlsd.runtime import export_onnx, make_runner, quantize_int8
from mlsd.visual_search.catalogue import CatalogueLog
from mlsd.visual_search.data import PhotoSource, assign_ids, decode_photo, read_bytes
from mlsd.visual_search.evaluation import evaluate_embeddings
from mlsd.visual_search.features import drift_features, model_input
from mlsd.visual_search.model import EncoderConfig, build_encoder

# the backends the encoder is served by, each with the artifact file it runs
ENCODER_FILES = {"torch": "encoder.pt", "onnx": "encoder.onnx", "onnx-int8": "encoder.int8.onnx",
                 "triton": "encoder.onnx", "triton-int8": "encoder.int8.onnx"}  # fmt: skip
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
    features: dict[str, np.ndarray],
    emb: np.ndarray,
    ids: np.ndarray,
    index: VectorIndex,
    n: int = 5000,
) -> DriftReference:
    """The catalogue as drift reference: its images' input features ((N,) each, see
    :func:`drift_features`), their embeddings and, as the score a search would get, each
    image's best match other than itself."""
    pick = np.random.default_rng(0).permutation(len(emb))[:n]
    scores, found = index.search(emb[pick], 2)  # (n, 2): itself first, usually
    top = np.where(found[:, 0] == ids[pick], scores[:, 1], scores[:, 0])
    return build_reference(
        features={k: np.asarray(v)[pick] for k, v in features.items()},
        scores={"top1_similarity": top[np.isfinite(top)]},
        embeddings={"image": emb[pick]},
        source=f"{len(pick)} catalogue images (leave-one-out top-1 similarity)",
    )


# --- the steps of building a version, shared by the demo's and a user's catalogue ---------


def write_encoder(writer: ArtifactWriter, model: torch.nn.Module, example: np.ndarray) -> None:
    """``encoder.pt`` (state dict) and ``encoder.onnx`` exported on ``example`` (B, C, S, S)."""
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save(state, writer.path("encoder.pt"))
    export_onnx(model, torch.as_tensor(example[:2]), writer.path("encoder.onnx"))


def read_deletions(live_log: str | None, objects: str | None) -> tuple[CatalogueLog | None, set]:
    """The live log and its tombstoned ids. A configured log that cannot be read fails the job
    (naming the store): an artifact built without its deletions would bring deleted images
    back."""
    logdb = CatalogueLog(live_log, objects) if live_log else None
    return logdb, (logdb.deleted_ids() if logdb is not None else set())


@dataclass
class Catalogue:
    """The rows of a version's index, in order: ids, embeddings and metadata columns."""

    ids: list[np.ndarray] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    private: list[bool] = field(default_factory=list)
    unsafe: list[bool] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def add_catalogue(self, ids, emb, signatures, labels, files=None) -> None:
        """Rows of the catalogue itself (public, owned by "catalogue")."""
        n = len(ids)
        self.ids.append(np.asarray(ids, np.int64))
        self.emb.append(np.asarray(emb, np.float32))
        self.owners += ["catalogue"] * n
        self.private += [False] * n
        self.unsafe += [False] * n
        self.signatures += list(signatures)
        self.labels += [int(v) for v in labels]
        self.files += list(files) if files is not None else [""] * n

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.emb), np.concatenate(self.ids)

    def write(self, path: Path) -> None:
        ids = np.concatenate(self.ids)
        pq.write_table(
            pa.table(
                {
                    "image_id": ids,
                    "owner": self.owners,
                    "private": self.private,
                    "unsafe": self.unsafe,
                    "signature": self.signatures,
                    "label": self.labels,
                    "file": self.files,
                }
            ),
            path,
        )


def fold_live_uploads(
    cat: Catalogue,
    logdb: CatalogueLog | None,
    deleted: set,
    writer: ArtifactWriter,
    cfg: EncoderConfig,
) -> int:
    """The indexing path of the book: the live log's additions (deleted ones erased) are
    embedded with this version's exported encoder (``encoder.onnx``, as the catalogue is) and
    become catalogue rows; their bytes go to ``live_images.parquet`` (GET /images/{id} after
    the log prunes them). -> how many."""
    ids, live_bytes, xs = [], [], []
    if logdb is not None:
        for _, live in logdb.since(0):
            data = logdb.image_bytes(live.meta.image_id)
            if data is None or live.meta.image_id in deleted:
                continue
            x, _ = model_input(decode_image(data, target=cfg.image_size), cfg)
            xs.append(x)  # (C, S, S)
            cat.ids.append(np.array([live.meta.image_id], np.int64))
            cat.owners.append(live.meta.owner)
            cat.private.append(live.meta.private)
            cat.unsafe.append(live.meta.unsafe)
            cat.signatures.append(live.meta.signature)
            cat.labels.append(-1)
            cat.files.append("")
            ids.append(live.meta.image_id)
            live_bytes.append(data)
        logdb.close()
    if xs:
        emb = embed_in_process(np.stack(xs), writer.path("encoder.onnx"))  # (n, D)
        cat.emb.append(emb)  # the rows of the ids appended above, in order
    pq.write_table(
        pa.table(
            {"image_id": pa.array(ids, pa.int64()), "data": pa.array(live_bytes, pa.binary())}
        ),
        writer.path("live_images.parquet"),
    )
    return len(ids)


def compression_metrics(
    writer: ArtifactWriter, model: torch.nn.Module, x: np.ndarray, emb: np.ndarray
) -> dict:
    """Model compression: static int8 calibrated on catalogue inputs ``x`` (n, C, S, S) whose
    exported-fp32 embeddings are ``emb`` (n, D); parity of torch, ONNX and int8."""
    metrics = {}
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
    return metrics


def index_metrics(index: VectorIndex, folded: int, deleted: int, t0: float) -> dict:
    return {
        "index": {"kind": index.kind, "size": len(index), "nprobe": index.nprobe},
        "folded_live_images": folded,
        "deleted_left_out": deleted,
        "index_seconds": time.perf_counter() - t0,
    }


def encoder_index_config(
    encoder_cfg: EncoderConfig, train_config: dict, index_cfg: IndexConfig
) -> dict:
    """What a visual-search version's manifest says it is: encoder, training, index."""
    return {"encoder": encoder_cfg.to_dict(), "train": train_config, "index": index_cfg.to_dict()}


def write_index(
    writer: ArtifactWriter, cat: Catalogue, index_cfg: IndexConfig, features: dict, n: int
) -> VectorIndex:
    """``index.faiss`` over every row, the drift reference over the first ``n`` (the
    catalogue's own images, whose input ``features`` are given) and ``catalogue.parquet``."""
    emb, ids = cat.embeddings()
    index = VectorIndex.build(emb, ids, index_cfg)
    index.save(writer.path("index.faiss"))
    ref = drift_reference(features, emb[:n], ids[:n], index)
    ref.save(writer.path(REFERENCE_FILE))
    cat.write(writer.path("catalogue.parquet"))
    return index


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
    """The demo's catalogue (an in-memory array of small images, Fashion-MNIST): embed +
    index, fold the live log, export ONNX fp32/int8, evaluate, commit a new version.

    ``embed(images, onnx_path)`` embeds the catalogue with the exported model: in process by
    default; the indexing job passes Ray Data batch inference."""
    t0 = time.perf_counter()
    model = model.eval().cpu()
    x = images_to_tensor(catalogue_images).numpy()  # (N, C, H, W)
    with store.new_version(name) as writer:
        write_encoder(writer, model, x)
        logdb, deleted = read_deletions(live_log, objects)
        keep = ~np.isin(np.arange(len(x)), np.fromiter(deleted, np.int64, len(deleted)))
        pixels = np.where(keep[:, None, None], catalogue_images, 0).astype(np.uint8)
        np.save(writer.path("images.npy"), pixels)  # (N, H, W) by id; deleted ones blank
        x, catalogue_images = x[keep], catalogue_images[keep]
        labels = np.full(len(x), -1) if catalogue_labels is None else catalogue_labels[keep]
        emb = (embed or embed_in_process)(x, writer.path("encoder.onnx"))
        cat = Catalogue()
        sigs = [dhash(img) for img in catalogue_images]
        cat.add_catalogue(np.flatnonzero(keep), emb, sigs, labels)
        folded = fold_live_uploads(cat, logdb, deleted, writer, encoder_cfg)
        index = write_index(
            writer, cat, index_cfg, drift_features(x, np.zeros(len(x), bool)), len(x)
        )
        metrics: dict = dict(extra_metrics or {})
        if catalogue_labels is not None:
            metrics["catalogue_eval"] = evaluate_embeddings(emb, np.asarray(labels))
        metrics.update(compression_metrics(writer, model, x, emb))
        metrics.update(index_metrics(index, folded, len(deleted), t0))
        config = encoder_index_config(encoder_cfg, train_config, index_cfg)
        return writer.commit(config=config, data=data_info or {}, metrics=metrics)


def build_photo_artifact(
    store: ArtifactStore,
    name: str,
    model: torch.nn.Module,
    encoder_cfg: EncoderConfig,
    train_config: dict,
    source: PhotoSource,
    index_cfg: IndexConfig,
    embed_rows: Callable[[Path], Iterable[dict]] | None = None,
    live_log: str | None = None,
    objects: str | None = None,
    previous_ids: dict[str, int] | None = None,
    max_bad_fraction: float = 0.5,
    extra_metrics: dict | None = None,
    data_info: dict | None = None,
) -> str:
    """A user's photo catalogue, streamed: ``embed_rows(onnx_path)`` yields batches (dicts of
    columns: ``path``, ``embedding`` (B, D), ``stored`` (bytes), ``signature``, ``error`` (""
    when fine) and the drift features) as Ray Data batch inference produces them (default:
    :func:`embed_photos_in_process`), so only the embeddings, never the pixels, are held
    here. Photos keep the ids they had in ``previous_ids``' version; tombstoned ones are
    left out. A mostly unreadable input fails
    (:class:`mlsd.data.sources.DataError`) and nothing is written to the store."""
    t0 = time.perf_counter()
    model = model.eval().cpu()
    name_of = {_key(f): n for f, n in zip(source.files, source.names, strict=True)}
    codes = source.label_codes()
    label_of = dict(zip(source.names, codes[0].tolist(), strict=True)) if codes is not None else {}
    all_ids = dict(zip(source.names, assign_ids(source.names, previous_ids).tolist(), strict=True))
    with store.new_version(name) as writer:
        sample = _sample(source, encoder_cfg)  # (n, C, S, S)
        write_encoder(writer, model, sample)
        logdb, deleted = read_deletions(live_log, objects)
        cat, bad = Catalogue(), BadRows()
        feats: dict[str, list] = {}
        stored_writer = None
        embed_rows = embed_rows or (lambda p: embed_photos_in_process(source, p, encoder_cfg))
        t_embed = time.perf_counter()
        arrivals = []  # (time, photos so far): the stream's rate once it is running
        for batch in embed_rows(writer.path("encoder.onnx")):
            arrivals.append((time.perf_counter(), bad.total + len(batch["path"])))
            ok = np.array([not e for e in batch["error"]], bool)
            names = [name_of.get(_key(p), p) for p in batch["path"]]
            bad.total += len(names)
            for n, e in zip(names, batch["error"], strict=True):
                if e:
                    bad.add(e, f"{source.src}: {n}")
            ids = np.array([all_ids.get(n, -1) for n in names], np.int64)
            ok &= (ids >= 0) & ~np.isin(ids, np.fromiter(deleted, np.int64, len(deleted)))
            if not ok.any():
                continue
            sel = np.flatnonzero(ok)
            cat.add_catalogue(
                ids[sel],
                np.asarray(batch["embedding"])[sel],
                [batch["signature"][i] for i in sel],
                [label_of.get(names[i], -1) for i in sel],
                [names[i] for i in sel],
            )
            for k in drift_names(encoder_cfg):
                feats.setdefault(k, []).append(np.asarray(batch[k], np.float64)[sel])
            table = pa.table(
                {
                    "image_id": pa.array(ids[sel], pa.int64()),
                    "data": pa.array([batch["stored"][i] for i in sel], pa.binary()),
                }
            )
            if stored_writer is None:
                stored_writer = pq.ParquetWriter(writer.path("images.parquet"), table.schema)
            stored_writer.write_table(table, row_group_size=256)
        if stored_writer is not None:
            stored_writer.close()
        embed_seconds = time.perf_counter() - t_embed
        steady = _second_half_rate(arrivals)
        bad.check(f"photos under {source.src}", max_bad_fraction)
        n = sum(len(i) for i in cat.ids)
        if n == 0:
            raise DataError(f"photos under {source.src}: every photo was deleted or unreadable")
        emb, ids = cat.embeddings()
        labels = np.asarray(cat.labels)
        folded = fold_live_uploads(cat, logdb, deleted, writer, encoder_cfg)
        features = {k: np.concatenate(v) for k, v in feats.items()}
        index = write_index(writer, cat, index_cfg, features, n)
        metrics: dict = dict(extra_metrics or {})
        metrics["input"] = bad.report()
        metrics["embed_seconds"] = embed_seconds  # read, decode, embed, store: the stream
        metrics["photos_per_second"] = bad.total / embed_seconds
        metrics["photos_per_second_steady"] = steady  # the second half: what 1M photos see
        metrics["labels_input"] = source.bad.report()
        if codes is not None and (labels >= 0).sum() > 1:
            lab = labels >= 0
            metrics["catalogue_eval"] = evaluate_embeddings(emb[lab], labels[lab])
        onnx_emb = make_runner("onnx", path=writer.path("encoder.onnx"), device="cpu").run(sample)
        metrics.update(compression_metrics(writer, model, sample, onnx_emb))
        metrics.update(index_metrics(index, folded, len(deleted), t0))
        config = encoder_index_config(encoder_cfg, train_config, index_cfg)
        config["labels"] = codes[1] if codes is not None else None
        data = {"catalogue": source.src, "photos": len(source), **(data_info or {})}
        return writer.commit(config=config, data=data, metrics=metrics)


DRIFT_FEATURES = (
    "brightness", "contrast", "edges", "anisotropy", "vertical_balance", "saturation", "flipped",
)  # fmt: skip


def _second_half_rate(arrivals: list[tuple[float, int]]) -> float:
    """Photos per second over the second half of a stream: start-up (actors, model loads)
    and the first, prefetched batches are behind it."""
    if len(arrivals) < 3:
        return 0.0
    total = arrivals[-1][1]
    t_half, n_half = next((t, n) for t, n in arrivals if n >= total / 2)
    t_end = arrivals[-1][0]
    return (total - n_half) / (t_end - t_half) if t_end > t_half else 0.0


def drift_names(cfg: EncoderConfig) -> tuple[str, ...]:
    """The drift features serving computes for this input (saturation: colour only)."""
    return tuple(k for k in DRIFT_FEATURES if cfg.in_channels == 3 or k != "saturation")


def _key(path: str) -> str:
    """A path as Ray Data's file readers report it (no scheme: ``bucket/key`` for s3)."""
    return path.split("://", 1)[-1]


def _sample(source: PhotoSource, cfg: EncoderConfig, n: int = 64) -> np.ndarray:
    """(n, C, S, S) model inputs of up to ``n`` readable photos spread over the catalogue:
    the export example, int8 calibration and parity inputs."""
    step = max(1, len(source.files) // n)
    out = []
    for f in source.files[::step]:
        try:
            out.append(decode_photo(read_bytes(f), cfg).x)
        except (InvalidImage, OSError):
            continue
        if len(out) >= n:
            break
    if not out:
        raise DataError(f"photos under {source.src}: none of them can be decoded")
    return np.stack(out)


def photo_batch(paths: list[str], blobs: list[bytes], cfg: EncoderConfig) -> dict:
    """Photos' bytes -> the columns :func:`build_photo_artifact` reads, less ``embedding``:
    ``image`` (B, C, S, S) model inputs (zeros for a bad file, whose ``error`` says why),
    ``stored`` bytes, ``signature`` and the drift features. Runs in Ray Data tasks."""
    c, s = cfg.in_channels, cfg.image_size
    out: dict[str, list] = {"path": [], "image": [], "stored": [], "signature": [], "error": []}
    stats: dict[str, list] = {k: [] for k in drift_names(cfg)}
    for path, data in zip(paths, blobs, strict=True):
        try:
            d = decode_photo(bytes(data), cfg)
            x, stored, err, st = d.x, d.stored, "", d.stats
        except InvalidImage as e:
            x, stored, err, st = np.zeros((c, s, s), np.float32), b"", f"unreadable image: {e}", {}
        out["path"].append(path)
        out["image"].append(x)
        out["stored"].append(stored)
        out["signature"].append(dhash(x) if not err else "")
        out["error"].append(err)
        for k in stats:
            stats[k].append(st.get(k, 0.0))
    return {
        "path": np.array(out["path"], dtype=object),
        "image": np.stack(out["image"]).astype(np.float32),
        "stored": np.array(out["stored"], dtype=object),
        "signature": np.array(out["signature"], dtype=object),
        "error": np.array(out["error"], dtype=object),
        **{k: np.array(v, np.float64) for k, v in stats.items()},
    }


def embed_photos_in_process(
    source: PhotoSource, onnx_path: Path, cfg: EncoderConfig, batch_size: int = 64
) -> Iterator[dict]:
    """:func:`build_photo_artifact`'s rows computed in this process (tests, small folders);
    the indexing job streams the same batches through Ray Data."""
    runner = make_runner("onnx", path=onnx_path, device="cpu")
    for i in range(0, len(source.files), batch_size):
        paths = source.files[i : i + batch_size]
        batch = photo_batch(paths, [read_bytes(p) for p in paths], cfg)
        batch["embedding"] = runner.run(batch.pop("image"))
        yield batch


def artifact_rows(
    store: ArtifactStore, name: str, label: str, x: torch.Tensor, with_int8: bool
) -> list[tuple[str, np.ndarray]]:
    """Embeddings of the catalogue by an artifact's served model(s), one row each."""
    try:
        art = store.load(name)
    except ArtifactError as e:
        print(f"skipping {label}: {e}")
        return []
    # the served fp32 ONNX model (its parity with torch is checked when the artifact is built)
    fp32 = make_runner("onnx", path=art.file("encoder.onnx"))
    emb = np.concatenate([fp32.run(x[i : i + 500].numpy()) for i in range(0, len(x), 500)])
    tr = art.config.get("train", {})
    desc = (
        f"{label} [{name}/{art.version}; positives={tr.get('positives')}, "
        f"epochs={tr.get('epochs')}]"
    )
    rows = [(desc, emb)]
    if art.config.get("encoder", {}).get("arch") == "fusion":  # what each half brings
        with torch.inference_mode():
            cnn = load_encoder_module(art).ours(x).numpy()
        rows.append((f"{label}: our CNN alone (without the ImageNet half)", cnn))
    if with_int8:
        int8 = make_runner("onnx", path=art.file("encoder.int8.onnx"))
        out = np.concatenate([int8.run(x[i : i + 500].numpy()) for i in range(0, len(x), 500)])
        rows.append((f"{label}, int8 ONNX (compressed)", out))
    return rows
