"""The recommendation artifact: everything serving needs, in one versioned folder.

factors.npz (WALS user/item factors, catalogue and trained-user masks, demographic
popularity), history.npz (the training log per user), tables.npz + tables.json (item and user
features), ranker.pt (+ its config in the manifest), settings in the manifest's config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlsd.artifacts import Artifact, ArtifactError, ArtifactWriter
from mlsd.models.ranker import RankerConfig, RankingModel
from mlsd.recommendation.candidates import CandidateGenerator
from mlsd.recommendation.features import History, RecTables
from mlsd.recommendation.pipeline import RecSettings

FILES = ["factors.npz", "history.npz", "tables.npz", "tables.json", "ranker.pt"]


@dataclass
class Recommender:
    cg: CandidateGenerator
    tables: RecTables
    history: History
    model: RankingModel
    settings: RecSettings
    version: str = ""


def write_recommender(
    writer: ArtifactWriter, cg: CandidateGenerator, tables: RecTables, history: History,
    model: RankingModel, settings: RecSettings,
) -> dict:  # fmt: skip
    """Stage the files; returns the manifest config to commit with."""
    catalogue = np.zeros(tables.n_items, bool)
    catalogue[cg.catalogue_items] = True
    np.savez(
        writer.path("factors.npz"),
        user_factors=cg.user_factors,
        item_factors=cg.item_factors,
        catalogue=catalogue,
        trained_users=cg.trained_users,
        demo_pop=cg.demo_pop,
    )
    np.savez(
        writer.path("history.npz"),
        indptr=history.indptr, items=history.items, ratings=history.ratings, ts=history.ts,
    )  # fmt: skip
    tables.save(writer.dir)
    torch.save(model.state_dict(), writer.path("ranker.pt"))
    return {"settings": settings.to_dict(), "ranker": model.cfg.to_dict()}


def load_recommender(art: Artifact, settings_override: dict | None = None) -> Recommender:
    try:
        cfg = art.config
        settings = RecSettings.from_dict({**cfg["settings"], **(settings_override or {})})
        with np.load(art.file("factors.npz")) as f:
            fac = {k: f[k] for k in f.files}
        with np.load(art.file("history.npz")) as h:
            history = History(h["indptr"], h["items"], h["ratings"], h["ts"])
        tables = RecTables.load(art.file("tables.npz"), art.file("tables.json"))
        model = RankingModel(RankerConfig(**cfg["ranker"]))
        model.load_state_dict(torch.load(art.file("ranker.pt"), weights_only=True))
    except (KeyError, ValueError, OSError, RuntimeError, EOFError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(
            f"recommendation artifact {art.name}/{art.version} unusable: {e}"
        ) from e
    cg = CandidateGenerator(
        fac["user_factors"], fac["item_factors"], fac["catalogue"], tables, fac["demo_pop"],
        fac["trained_users"], settings.wals.reg, settings.wals.alpha,
    )  # fmt: skip
    return Recommender(cg, tables, history, model.eval(), settings, art.version)
