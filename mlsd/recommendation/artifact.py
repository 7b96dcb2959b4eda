"""The recommendation artifact: everything serving needs, in one versioned folder.

factors.npz (WALS user/item factors, catalogue and trained-user masks, demographic
popularity), history.npz (the training log per user), tables.npz + tables.json (item and user
features), ranker.pt (+ its config in the manifest) and ranker.onnx (the same model, named
inputs, for the onnx / Triton runners), drift_reference.json (events and requests of the
training log, for drift monitoring), settings in the manifest's config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore, ArtifactWriter
from mlsd.data.movielens import MovieLens
from mlsd.drift import REFERENCE_FILE
from mlsd.recommendation.candidates import CandidateGenerator
from mlsd.recommendation.features import History, RecTables, build_batch, example_requests
from mlsd.recommendation.ids import PlatformIds
from mlsd.recommendation.model import RankerConfig, RankingModel
from mlsd.recommendation.pipeline import (
    RANKER_INPUTS,
    Ranker,
    RankerExamples,
    RankerTrainConfig,
    RecSettings,
    drift_reference,
    fit_candidate_generator,
    ranker_examples,
    train_ranker,
)
from mlsd.runtime import export_onnx, load_runner

TrainFn = Callable[[RankerExamples, RankerTrainConfig], tuple[RankingModel, dict]]
FILES = ["factors.npz", "history.npz", "tables.npz", "tables.json", "ranker.pt", "ranker.onnx"]
RANKER_FILES = {"torch": "ranker.pt", "onnx": "ranker.onnx"}


@dataclass
class Recommender:
    cg: CandidateGenerator
    tables: RecTables
    history: History
    model: RankingModel
    settings: RecSettings
    version: str = ""


def write_recommender(
    writer: ArtifactWriter,
    cg: CandidateGenerator,
    tables: RecTables,
    history: History,
    model: RankingModel,
    settings: RecSettings,
) -> dict:
    """Stage the files; returns the manifest config to commit with."""
    np.savez(
        writer.path("factors.npz"),
        user_factors=cg.user_factors,
        item_factors=cg.item_factors,
        catalogue=cg.catalogue,
        trained_users=cg.trained_users,
        demo_pop=cg.demo_pop,
    )
    np.savez(
        writer.path("history.npz"),
        indptr=history.indptr,
        items=history.items,
        ratings=history.ratings,
        ts=history.ts,
    )
    tables.save(writer.dir)
    torch.save(model.state_dict(), writer.path("ranker.pt"))
    example = build_batch(tables, example_requests(tables))
    export_onnx(
        model.eval(),
        {n: example[n] for n in RANKER_INPUTS},
        writer.path("ranker.onnx"),
        output_name="logit",
    )
    return {"settings": settings.to_dict(), "ranker": model.cfg.to_dict()}


def _unusable(art: Artifact, e: Exception) -> ArtifactError:
    return ArtifactError(f"recommendation artifact {art.name}/{art.version} unusable: {e}")


def load_platform_ids(art: Artifact) -> PlatformIds:
    """The platform's id maps (``id_maps.json``; none: the model's ids are the platform's)."""
    if "id_maps.json" not in art.manifest.get("files", {}):
        return PlatformIds()
    try:
        return PlatformIds.from_json(art.file("id_maps.json").read_bytes())
    except (ValueError, TypeError, AttributeError, OSError) as e:
        raise _unusable(art, e) from e


def load_tables(art: Artifact) -> RecTables:
    try:
        return RecTables.load(art.file("tables.npz"), art.file("tables.json"))
    except ArtifactError:
        raise
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise _unusable(art, e) from e


def load_ranker(art: Artifact, backend: str = "torch", **runner_kw) -> Ranker:
    """What the ranking service runs: the model behind the runner ``backend`` (torch: the
    state dict; onnx: the exported graph), with the feature tables."""
    if backend == "onnx" and "ranker.onnx" not in art.manifest.get("files", {}):
        raise ArtifactError(f"artifact {art.name}/{art.version} has no ranker.onnx; rebuild it")
    tables = load_tables(art)
    runner = load_runner(
        art, backend, RANKER_FILES, lambda: load_ranking_model(art)[0], what="ranker", **runner_kw
    )
    return Ranker(runner, tables)


def load_ranking_model(art: Artifact) -> tuple[RankingModel, RecTables]:
    """The torch ranking model and the feature tables."""
    tables = load_tables(art)
    try:
        model = RankingModel(RankerConfig(**art.config["ranker"]))
        model.load_state_dict(torch.load(art.file("ranker.pt"), weights_only=True))
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, OSError, RuntimeError, EOFError) as e:
        raise _unusable(art, e) from e
    return model.eval(), tables


def load_recommender(art: Artifact) -> Recommender:
    """Everything, for candidate generation and offline use."""
    model, tables = load_ranking_model(art)
    try:
        settings = RecSettings.from_dict(art.config["settings"])
        with np.load(art.file("factors.npz")) as f:
            fac = {k: f[k] for k in f.files}
        with np.load(art.file("history.npz")) as h:
            history = History(h["indptr"], h["items"], h["ratings"], h["ts"])
        cg = CandidateGenerator(
            fac["user_factors"],
            fac["item_factors"],
            fac["catalogue"],
            tables,
            fac["demo_pop"],
            fac["trained_users"],
            settings.wals.reg,
            settings.wals.alpha,
        )
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, OSError, EOFError) as e:
        raise _unusable(art, e) from e
    return Recommender(cg, tables, history, model, settings, art.version)


def build_recommender_artifact(
    store: ArtifactStore,
    name: str,
    ml: MovieLens,
    title_emb: np.ndarray,
    settings: RecSettings,
    train_fn: Callable[[RankerExamples, RankerTrainConfig], tuple[RankingModel, dict]]
    | None = None,
    fit_wals: Callable | None = None,
    version: str | None = None,
    config_extra: dict | None = None,
    data_info: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> str:
    """Ranker examples -> ranker (``train_fn``, in process by default) -> WALS on the whole
    log -> artifact version. The training job passes Ray Train and Ray WALS here."""
    t0 = time.perf_counter()
    ex = ranker_examples(ml, ml.ratings, title_emb, settings, fit_wals)
    if train_fn is None:
        model, final = train_ranker(ex, settings.ranker), {}
    else:
        model, final = train_fn(ex, settings.ranker)
    cg, tables, history = fit_candidate_generator(ml, ml.ratings, title_emb, settings, fit_wals)
    writer = store.new_version(name, version)
    config = write_recommender(writer, cg, tables, history, model, settings)
    for fname, body in (extra_files or {}).items():  # e.g. the string id maps of a user's log
        writer.path(fname).write_bytes(body)
    ranker = Ranker.torch(model.eval(), tables, device="cpu")
    drift_reference(ml.ratings, cg, tables, history, ranker, settings).save(
        writer.path(REFERENCE_FILE)
    )
    return writer.commit(
        config={**config, **(config_extra or {})},
        data={
            "ratings": int(len(ml.ratings)),
            "users": int(ml.ratings.user_id.nunique()),
            "items": int(len(ml.items)),
            **(data_info or {}),
        },
        metrics={
            "ranker_final_loss": final.get("loss"),
            "ranker_examples": len(ex.requests),
            "ranker_positives": ex.positives(),
            "seconds": time.perf_counter() - t0,
        },
    )
