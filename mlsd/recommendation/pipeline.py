"""The sequential hybrid end to end, without Ray: candidate generation (WALS) -> ranking
(the content-aware model) -> reranking (business rules).

The ranker learns from the future of the training log, the way it is used: each user's
training interactions are split again in time, WALS is fit on the earlier part, its top-N
candidates for the later part are the ranker's examples (label = relevant later), and features
see only the earlier part. The served system then uses WALS fit on the whole log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mlsd.data.movielens import SPLITS, MovieLens, interaction_matrix
from mlsd.drift import build_reference
from mlsd.recommendation.candidates import (
    CandidateGenerator,
    Candidates,
    demographic_popularity,
)
from mlsd.recommendation.features import (
    History,
    RankRequest,
    RecTables,
    build_batch,
    example_requests,
)
from mlsd.recommendation.mf import WALS, WALSConfig
from mlsd.recommendation.model import RankerConfig, RankingModel
from mlsd.recommendation.rerank import RecRerankConfig, rerank
from mlsd.runtime import ModelRunner, make_runner


@dataclass
class RankerTrainConfig:
    # Chosen on the temporal *validation* split (train cut again in time; test unseen):
    # pointwise + listwise loss, strong weight decay on small (8-d) ID embeddings, a zero-init
    # output so training starts from the candidate generator's order. Validation nDCG@10,
    # WALS alone 0.147 -> 0.163 after 6 epochs (flat from 4 to 8), 200 candidates.
    epochs: int = 6
    lr: float = 1e-3
    listwise: float = 1.0
    weight_decay: float = 0.05
    users_per_batch: int = 32
    seed: int = 0
    dim: int = 8
    hidden: int = 128
    dropout: float = 0.1
    use_ids: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecSettings:
    wals: WALSConfig = field(default_factory=lambda: WALSConfig(factors=64, reg=0.05))
    feedback: str = "watched"  # watched (implicit) | rating (strength as confidence)
    n_candidates: int = 200
    relevant_min: int = 4
    # how the ranker's examples are cut from the log: "temporal" (serving predicts the
    # future) or "random" (only to match a random evaluation protocol)
    example_split: str = "temporal"
    ranker: RankerTrainConfig = field(default_factory=RankerTrainConfig)
    rerank: RecRerankConfig = field(default_factory=RecRerankConfig)

    def to_dict(self) -> dict:
        return {
            "wals": self.wals.to_dict(),
            "feedback": self.feedback,
            "n_candidates": self.n_candidates,
            "relevant_min": self.relevant_min,
            "example_split": self.example_split,
            "ranker": self.ranker.to_dict(),
            "rerank": self.rerank.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RecSettings:
        return cls(
            wals=WALSConfig(**d["wals"]),
            feedback=d["feedback"],
            n_candidates=d["n_candidates"],
            relevant_min=d["relevant_min"],
            example_split=d.get("example_split", "temporal"),
            ranker=RankerTrainConfig(**d["ranker"]),
            rerank=RecRerankConfig(**d["rerank"]),
        )


def fit_candidate_generator(
    ml: MovieLens,
    train: pd.DataFrame,
    title_emb: np.ndarray,
    settings: RecSettings,
    fit_wals: Callable[[WALS, object], WALS] | None = None,
) -> tuple[CandidateGenerator, RecTables, History]:
    """WALS on ``train`` + the item/user tables + the faiss index over item factors.
    ``fit_wals(model, feedback)`` lets a caller solve on Ray workers instead of in process."""
    X = interaction_matrix(train, ml.n_users, ml.n_items, settings.feedback)
    model = WALS(settings.wals)
    model = fit_wals(model, X) if fit_wals else model.fit(X)
    tables = RecTables.build(ml, train, title_emb, settings.relevant_min)
    catalogue = np.zeros(ml.n_items, bool)
    catalogue[train.item_id.unique()] = True
    trained = np.zeros(ml.n_users, bool)
    trained[train.user_id.unique()] = True
    cg = CandidateGenerator(
        model.user_factors,
        model.item_factors,
        catalogue,
        tables,
        demographic_popularity(train, tables),
        trained,
        settings.wals.reg,
        settings.wals.alpha,
    )
    return cg, tables, History.from_ratings(train, ml.n_users)


@dataclass
class RankerExamples:
    requests: list[RankRequest]
    labels: list[np.ndarray]  # (n,) per request, 1 = relevant in the target period
    tables: RecTables

    def positives(self) -> int:
        return int(sum(lab.sum() for lab in self.labels))


def ranker_examples(
    ml: MovieLens,
    train: pd.DataFrame,
    title_emb: np.ndarray,
    settings: RecSettings,
    fit_wals: Callable | None = None,
) -> RankerExamples:
    """Split ``train`` in time, candidates from the earlier part, labels from the later."""
    hist, target = SPLITS[settings.example_split](train)
    cg, tables, history = fit_candidate_generator(ml, hist, title_emb, settings, fit_wals)
    relevant = target[target.rating >= settings.relevant_min]
    rel_sets = relevant.groupby("user_id")["item_id"].apply(set)
    first_ts = target.groupby("user_id")["timestamp"].min()
    users = np.array([u for u in rel_sets.index if cg.trained_users[u]], np.int64)
    seen = [history.of(int(u))[0] for u in users]
    cands = cg.generate_batch(users, settings.n_candidates, seen)
    requests, labels = [], []
    for u, c in zip(users, cands, strict=True):
        items, ratings = history.of(int(u))
        requests.append(RankRequest(int(u), c.items, c.scores, items, ratings, int(first_ts[u])))
        labels.append(np.isin(c.items, list(rel_sets[u])).astype(np.float32))
    return RankerExamples(requests, labels, tables)


def new_ranker(tables: RecTables, cfg: RankerTrainConfig) -> RankingModel:
    torch.manual_seed(cfg.seed)
    return RankingModel(
        RankerConfig(
            n_items=tables.n_items,
            n_occupations=len(tables.occupations),
            title_dim=tables.title_emb.shape[1],
            dim=cfg.dim,
            hidden=cfg.hidden,
            dropout=cfg.dropout,
            use_ids=cfg.use_ids,
        )
    )


def ranker_loss(
    model: torch.nn.Module, batch: dict, labels: torch.Tensor, listwise: float = 1.0
) -> torch.Tensor:
    """Pointwise binary cross-entropy over every pair, plus a listwise softmax cross-entropy
    over each request's candidates (the relevant ones share the target mass)."""
    logits = model(batch)  # (P,)
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    if listwise:
        g = batch["pair_user"]
        B = int(g.max()) + 1 if len(g) else 0
        m = torch.full((B,), -torch.inf).scatter_reduce(0, g, logits.detach(), "amax")
        lse = torch.zeros(B).index_add_(0, g, torch.exp(logits - m[g])).log() + m  # (B,)
        pos = torch.zeros(B).index_add_(0, g, labels)
        ll = torch.zeros(B).index_add_(0, g, labels * (logits - lse[g]))
        has = pos > 0
        if has.any():
            loss = loss + listwise * (-(ll[has] / pos[has]).mean())
    return loss


def batches(
    ex: RankerExamples, order: np.ndarray, users_per_batch: int
) -> Iterator[tuple[dict, torch.Tensor]]:
    for s in range(0, len(order), users_per_batch):
        idx = order[s : s + users_per_batch]
        batch = build_batch(ex.tables, [ex.requests[i] for i in idx])
        yield batch, torch.as_tensor(np.concatenate([ex.labels[i] for i in idx]))


def train_ranker(
    ex: RankerExamples, cfg: RankerTrainConfig, log: Callable[[dict], None] | None = None
) -> RankingModel:
    """The in-process training loop (Ray Train's worker loop runs the same steps on a shard)."""
    model = new_ranker(ex.tables, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for batch, labels in batches(ex, rng.permutation(len(ex.requests)), cfg.users_per_batch):
            loss = ranker_loss(model, batch, labels, cfg.listwise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(labels), n + len(labels)
        if log:
            log({"epoch": epoch, "loss": total / max(n, 1)})
    return model.eval()


RANKER_INPUTS = (
    "item", "pair_user", "dense", "title", "user_cats", "hour", "dow",
    "hist", "hist_offsets", "liked", "liked_offsets",
)  # fmt: skip
PERSONAL = ("personal", "fold_in")  # strategies whose candidates the ranking model re-scores


class Ranker:
    """The ranking model behind the shared runner (named inputs: :data:`RANKER_INPUTS`):
    requests -> per request, the probability that the user finds each candidate relevant."""

    def __init__(self, runner: ModelRunner, tables: RecTables):
        self.runner, self.tables = runner, tables
        self.device = runner.device

    @classmethod
    def torch(cls, model: RankingModel, tables: RecTables, **runner_kw) -> Ranker:
        return cls(make_runner("torch", model=model, **runner_kw), tables)

    def __call__(self, requests: list[RankRequest]) -> list[np.ndarray]:
        if not requests:
            return []
        logits = self.runner.run(build_batch(self.tables, requests))  # (P,)
        out = 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))
        splits = np.cumsum([len(r.items) for r in requests])[:-1]
        return np.split(out, splits)

    def warm_up(self) -> None:
        self(example_requests(self.tables))


@dataclass
class UserCandidates:
    """Candidate generation's answer for one user, with the history it was computed from."""

    user_id: int
    items: np.ndarray  # (n,) best first
    scores: np.ndarray  # (n,) generator scores
    strategy: str  # personal | fold_in | demographic | popular
    history_items: np.ndarray  # (h,) training history + logged events
    history_ratings: np.ndarray  # (h,)

    def rank_request(self, now: int) -> RankRequest | None:
        """The ranking model's input, or None for a cold start (popularity order is final)."""
        if self.strategy not in PERSONAL or not len(self.items):
            return None
        return RankRequest(
            self.user_id, self.items, self.scores, self.history_items, self.history_ratings, now
        )


def generate_candidates(
    cg: CandidateGenerator,
    history: History,
    user_id: int,
    n: int,
    logged: tuple[np.ndarray, np.ndarray] | None = None,
    forgotten: bool = False,
) -> UserCandidates:
    """Top-n candidates for one user: the training history merged with the events logged
    since (``logged`` = (items, strengths)); unknown videos in the log are kept there but not
    used. The cold-start order (personal, fold_in, demographic, popular) is the generator's.
    ``forgotten``: the user had their history deleted after this model was trained: what the
    model learnt of them (factor, training history) is not used, only events logged since."""
    items, ratings = history.of(user_id)
    if forgotten:
        items, ratings = items[:0], ratings[:0]
    fresh, strength = logged if logged is not None else (np.zeros(0, np.int64),) * 2
    fresh, strength = np.asarray(fresh, np.int64), np.asarray(strength, np.float32)
    ok = (fresh >= 0) & (fresh < cg.tables.n_items)
    fresh, strength = fresh[ok], strength[ok]
    c = cg.generate(user_id, n, items, fresh, trained=not forgotten)
    return UserCandidates(
        user_id,
        c.items,
        c.scores,
        c.strategy,
        np.concatenate([items, fresh]),
        np.concatenate([ratings, strength]),
    )


def final_ranking(
    cands: UserCandidates,
    scores: np.ndarray | None,
    k: int,
    now: float,
    tables: RecTables,
    cfg: RecRerankConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores (or, for a cold start, the generator's) -> reranking rules -> top k."""
    s = cands.scores if scores is None else scores
    watched = set(np.asarray(cands.history_items).tolist())
    return rerank(cands.items, s, k, tables.genres, tables.release_ts, now, watched, cfg)


def recommend_one(
    cg: CandidateGenerator,
    history: History,
    ranker: Ranker | None,
    user_id: int,
    k: int,
    now: int,
    settings: RecSettings,
    logged: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[UserCandidates, np.ndarray, np.ndarray]:
    """The serving graph for one request in one process: candidates (with the logged events)
    -> ranking (personal strategies) -> reranking. -> (candidates, items, scores)."""
    cands = generate_candidates(cg, history, user_id, max(settings.n_candidates, k), logged)
    req = cands.rank_request(now)
    scores = ranker([req])[0] if (req is not None and ranker is not None) else None
    items, final = final_ranking(cands, scores, k, now, cg.tables, settings.rerank)
    return cands, items, final


@dataclass
class TwoStage:
    """Candidate generation -> ranking -> reranking for batches of users (evaluation); the
    same steps, per user, as the serving graph (:func:`generate_candidates`,
    :meth:`UserCandidates.rank_request`, :func:`final_ranking`)."""

    cg: CandidateGenerator
    tables: RecTables
    history: History
    ranker: Ranker | None
    settings: RecSettings

    def recommend(self, users: np.ndarray, request_ts: np.ndarray, k: int) -> list[np.ndarray]:
        seen = [self.history.of(int(u)) for u in users]
        cands: list[Candidates] = self.cg.generate_batch(
            users, self.settings.n_candidates, [h for h, _ in seen]
        )
        out = []
        for s in range(0, len(users), 256):
            batch = [
                UserCandidates(int(u), c.items, c.scores, c.strategy, h, r)
                for u, c, (h, r) in zip(
                    users[s : s + 256], cands[s : s + 256], seen[s : s + 256], strict=True
                )
            ]
            reqs = [
                uc.rank_request(int(t))
                for uc, t in zip(batch, request_ts[s : s + 256], strict=True)
            ]
            ranked = [r for r in reqs if r is not None]
            scores = iter(self.ranker(ranked) if self.ranker and ranked else [])
            for uc, req, t in zip(batch, reqs, request_ts[s : s + 256], strict=True):
                sc = next(scores) if (req is not None and self.ranker) else None
                items, _ = final_ranking(uc, sc, k, int(t), self.tables, self.settings.rerank)
                out.append(items)
        return out


def event_drift(tables: RecTables, user_id: int, video_id: int) -> dict:
    """What drift monitoring records of one feedback event: whether its user is known, how
    popular its video was in training (log1p count; 0 if unknown) and the video's title
    embedding (the content space a new audience's tastes move in)."""
    known = tables.is_known_video(video_id)
    return {
        "event_known_user": float(tables.is_known_user(user_id)),
        "event_video_popularity": float(np.log1p(tables.popularity[video_id])) if known else 0.0,
        "event_video": tables.title_emb[video_id] if known else None,
    }


def request_drift(cands: UserCandidates, final: np.ndarray, ranked: bool) -> dict:
    """What drift monitoring records of one recommendation request: the user's history length
    (log1p), whether a personal strategy served it, and the top ranking score if ranked."""
    return {
        "request_history": float(np.log1p(len(cands.history_items))),
        "request_personal": float(cands.strategy in PERSONAL),
        "top1_score": float(final[0]) if ranked and len(final) else None,
    }


def drift_reference(
    ratings: pd.DataFrame,
    cg: CandidateGenerator,
    tables: RecTables,
    history: History,
    ranker: Ranker,
    settings: RecSettings,
    events: int = 5000,
    requests: int = 400,
    seed: int = 0,
):
    """The training log as drift reference: a sample of its events, and requests of users
    drawn by activity, served at the log's end by the same steps as serving."""

    rng = np.random.default_rng(seed)
    rows = ratings.iloc[rng.choice(len(ratings), min(events, len(ratings)), replace=False)]
    pairs = zip(rows.user_id, rows.item_id, strict=True)
    ev = [event_drift(tables, int(u), int(i)) for u, i in pairs]
    now = int(ratings.timestamp.max()) + 86400
    users = ratings.user_id.to_numpy()[rng.choice(len(ratings), requests)]
    req = []
    for u in users:
        cands, _, final = recommend_one(cg, history, ranker, int(u), 10, now, settings)
        req.append(request_drift(cands, final, cands.rank_request(now) is not None))
    col = lambda rs, k: np.array([r[k] for r in rs if r[k] is not None])  # noqa: E731
    return build_reference(
        features={k: col(ev, k) for k in ("event_known_user", "event_video_popularity")}
        | {k: col(req, k) for k in ("request_history", "request_personal")},
        scores={"top1_score": col(req, "top1_score")},
        embeddings={
            "event_video": np.stack([e["event_video"] for e in ev if e["event_video"] is not None])
        },
        source=f"{len(ev)} training events, {len(req)} requests at the log's end",
    )
