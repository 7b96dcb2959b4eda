"""Matrix factorisation of the user-video feedback matrix: WALS (the book's choice) and SGD.

Implicit feedback as the book frames it: every (user, video) pair is in the loss, observed
pairs with preference 1 and confidence weight ``c = alpha * r`` (r = the feedback strength:
rating, watch count), unobserved pairs with preference 0 and weight 1::

    L = sum_observed c_ui (1 - x_u.y_i)^2 + sum_unobserved (x_u.y_i)^2 + reg (|X|^2 + |Y|^2)

WALS alternates: fix Y, solve every user's weighted least squares; fix X, solve every item's.
Each row's solve is independent, which is what makes WALS parallel: rows are split into blocks
and the blocks solved anywhere (threads, Ray workers, GPUs) with the same result. The per-row
system is solved by a few conjugate-gradient steps warm-started from the current factors (as
`implicit` does), or exactly by Cholesky for small problems.
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from mlsd.runtime import resolve_threads


@dataclass
class WALSConfig:
    factors: int = 64
    reg: float = 0.01
    alpha: float = 1.0
    iterations: int = 15
    solver: str = "cg"  # cg | cholesky
    cg_steps: int = 3
    init_scale: float = 0.01
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # CPU solver threads; 0 = the CPUs this process may use (its affinity)

    def to_dict(self) -> dict:
        return asdict(self)


def confidence_matrix(feedback: sp.spmatrix, alpha: float) -> sp.csr_matrix:
    """Observed entries' confidence weights c = alpha * r (r > 0), as a CSR matrix."""
    c = sp.csr_matrix(feedback, dtype=np.float32, copy=True)
    c.data *= alpha
    c.eliminate_zeros()
    return c


class RowBlock:
    """One block of rows of the confidence matrix as torch CSR tensors, ready to solve.

    The CG solve only needs two sparse kernels per step, both with a fixed sparsity pattern:
    SDDMM (``sampled_addmm``: the dot products y_i.v_u at observed pairs) and SpMM (CSR @
    dense). Neither materialises the (nnz, k) matrix of gathered factors, which is what makes
    this as fast as a hand-written per-row loop on CPU, and it runs unchanged on GPU.
    """

    def __init__(self, conf: sp.csr_matrix, device: str = "cpu"):
        conf = conf.tocsr()
        conf.sort_indices()
        self.n, self.n_cols = conf.shape
        self.crow = torch.as_tensor(conf.indptr.astype(np.int64), device=device)
        self.cols = torch.as_tensor(conf.indices.astype(np.int64), device=device)
        self.conf = torch.as_tensor(conf.data.astype(np.float32), device=device)
        counts = np.diff(conf.indptr)
        self.rows = torch.as_tensor(np.repeat(np.arange(self.n), counts), device=device)
        self.C = self.csr(self.conf)  # values c
        self.C1 = self.csr(self.conf - 1.0)  # values c - 1
        # with c == 1 everywhere (binary feedback, alpha 1) the sparse term of A vanishes
        self.sparse_term = bool((self.conf != 1.0).any())

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we test it here
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, values, size=(self.n, self.n_cols))


def solve_rows(
    block: RowBlock,
    Y: torch.Tensor,  # (n_cols, k) the fixed side
    YtY: torch.Tensor,  # (k, k)
    reg: float,
    X0: torch.Tensor | None = None,  # (n_rows, k) warm start for CG
    solver: str = "cg",
    cg_steps: int = 3,
) -> torch.Tensor:
    """Solve (YtY + reg I + Y_r^T (C_r - I) Y_r) x_r = Y_r^T c_r for every row r of the block."""
    k = Y.shape[1]
    if solver == "cholesky":
        b = torch.sparse.mm(block.C, Y)  # (n, k) = Y_r^T c_r for every row
        Yi = Y[block.cols]  # (nnz, k)
        A = (YtY + reg * torch.eye(k, dtype=Y.dtype, device=Y.device)).expand(block.n, k, k).clone()
        w = (block.conf - 1.0)[:, None, None]
        for s in range(0, len(block.cols), 65536):  # sum of weighted outer products, in chunks
            e = slice(s, s + 65536)
            A.index_add_(0, block.rows[e], w[e] * Yi[e, :, None] * Yi[e, None, :])
        return torch.linalg.solve(A, b)
    if solver != "cg":
        raise ValueError(f"solver must be 'cg' or 'cholesky', got {solver!r}")
    A_dense = YtY + reg * torch.eye(k, dtype=Y.dtype, device=Y.device)  # (k, k)
    Yt = Y.T  # (k, n_cols)
    c1 = block.conf - 1.0

    def dots(V: torch.Tensor) -> torch.Tensor:  # (nnz,) y_i . v_u at the observed pairs
        return torch.sparse.sampled_addmm(block.C1, V, Yt, beta=0.0).values()

    def matvec(V: torch.Tensor) -> torch.Tensor:  # A V for every row at once, (n, k)
        out = V @ A_dense
        if block.sparse_term:
            out += torch.sparse.mm(block.csr(dots(V) * c1), Y)
        return out

    if X0 is None:
        x = torch.zeros(block.n, k, dtype=Y.dtype, device=Y.device)
        r = torch.sparse.mm(block.C, Y)  # b
    else:  # r = b - A x with b and the sparse part of A x in one SpMM: Y^T (c - (c-1) y.x)
        x = X0.clone()
        w = block.conf - (dots(x) * c1 if block.sparse_term else 0.0)
        r = torch.sparse.mm(block.csr(w), Y) - x @ A_dense
    p = r.clone()
    rs = torch.linalg.vecdot(r, r)  # (n,)
    for it in range(cg_steps):  # in-place updates: these (n, k) passes are memory-bound
        Ap = matvec(p)
        denom = torch.linalg.vecdot(p, Ap)
        step = torch.where(denom > 1e-20, rs / denom.clamp_min(1e-20), torch.zeros_like(rs))
        x.addcmul_(step[:, None], p)
        if it == cg_steps - 1:
            break  # the residual and direction of a step never taken are not needed
        r.addcmul_(step[:, None], Ap, value=-1.0)
        rs_new = torch.linalg.vecdot(r, r)
        beta = torch.where(rs > 1e-20, rs_new / rs.clamp_min(1e-20), torch.zeros_like(rs))
        p.mul_(beta[:, None]).add_(r)
        rs = rs_new
    return x


def split_rows(n: int, blocks: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, max(1, blocks) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


CHUNK_NNZ = 80_000  # per single-threaded solve: its (rows, k) arrays stay in cache
CHUNK_ROWS = 4096
CHUNK_MIN_DIM = 16_384  # smaller problems fit in cache whole; chunking would only add calls


def split_rows_by_nnz(indptr: np.ndarray, max_nnz: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive row ranges with at most ``max_nnz`` non-zeros (a heavier single row gets a
    range of its own) and at most ``max_rows`` rows."""
    out, start, n = [], 0, len(indptr) - 1
    while start < n:
        end = int(np.searchsorted(indptr, indptr[start] + max_nnz, "right")) - 1
        end = min(max(end, start + 1), start + max_rows, n)
        out.append((start, end))
        start = end
    return out


Chunks = list[tuple[tuple[int, int], RowBlock]]


def chunk_rows(
    m: sp.csr_matrix, blocks: int = 1, device: str = "cpu", chunk_nnz: int | None = CHUNK_NNZ
) -> Chunks:
    """Row blocks of ``m`` as solvable :class:`RowBlock` s; on CPU, for matrices too big for
    the cache, each block is cut into chunks of at most ``chunk_nnz`` non-zeros (the units
    the solver's threads share out)."""
    m = sp.csr_matrix(m)
    out: Chunks = []
    for a, b in split_rows(m.shape[0], blocks):
        if chunk_nnz and device == "cpu" and sum(m.shape) > CHUNK_MIN_DIM:
            sub = split_rows_by_nnz(m.indptr[a : b + 1] - m.indptr[a], chunk_nnz, CHUNK_ROWS)
        else:
            sub = [(0, b - a)]
        out += [((a + s, a + e), RowBlock(m[a + s : a + e], device)) for s, e in sub]
    return out


def solve_chunks(
    chunks: Chunks,
    Y: torch.Tensor,
    X0: torch.Tensor,
    cfg: WALSConfig,
    offset: int = 0,
    threads: int | None = None,
) -> torch.Tensor:
    """Solve every chunk's rows against the fixed side Y; rows are (a, b) - offset in X0.

    On CPU the chunks are shared out dynamically to ``threads`` workers, each running torch
    single-threaded: a worker whose core is busy with other work simply solves fewer chunks,
    and the factors do not depend on the number of threads (or of Ray workers). Splitting every
    small op over an OpenMP team instead makes each op wait at a barrier for the slowest
    thread: with one core contended that cost 16x (see ``bench.wals_speed``'s contended row).
    """

    def one(chunk) -> torch.Tensor:
        (a, b), blk = chunk
        return solve_rows(
            blk, Y, YtY, cfg.reg, X0[a - offset : b - offset], cfg.solver, cfg.cg_steps
        )

    if Y.device.type != "cpu":
        YtY = Y.T @ Y
        return torch.cat([one(c) for c in chunks])
    n = min(threads or cfg.threads or resolve_threads(), len(chunks))
    with _torch_threads(1):  # single-threaded kernels: the same factors for 1 or N threads
        YtY = Y.T @ Y
        if n <= 1:
            return torch.cat([one(c) for c in chunks])
        with ThreadPoolExecutor(n) as pool:
            return torch.cat(list(pool.map(one, chunks)))


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LocalBlockSolver:
    """Solves the row blocks of each side in this process, one after another. A distributed
    solver (``train.recommendation_wals.RayBlockSolver``) has the same two methods and solves
    the blocks on Ray workers; both call :func:`solve_rows` on the same chunks, so the factors
    agree.

    On CPU each block is cut into cache-sized chunks (``CHUNK_NNZ`` non-zeros): the CG updates
    are memory-bound passes over (rows, k) arrays, so a chunk per thread, single-threaded,
    beats one 100K-row solve split over an OpenMP team, and stays fast when a core is busy.
    """

    def __init__(
        self,
        conf: sp.csr_matrix,
        blocks: int = 1,
        device: str = "cpu",
        chunk_nnz: int | None = CHUNK_NNZ,
    ):
        conf = sp.csr_matrix(conf)
        self.sides = {
            "users": chunk_rows(conf, blocks, device, chunk_nnz),
            "items": chunk_rows(conf.T, blocks, device, chunk_nnz),
        }

    def solve(self, side: str, Y: torch.Tensor, X0: torch.Tensor, cfg: WALSConfig) -> torch.Tensor:
        return solve_chunks(self.sides[side], Y, X0, cfg)

    def close(self) -> None:
        pass


class WALS:
    """Weighted alternating least squares in torch (CPU or GPU). Rows are independent given
    the other side, so each half-step is a set of row blocks solved by a block solver: in
    process by default, on Ray workers with ``train.recommendation_wals.RayBlockSolver``."""

    def __init__(self, cfg: WALSConfig | None = None):
        self.cfg = cfg or WALSConfig()
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    def init_factors(self, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.cfg.seed)
        k, s = self.cfg.factors, self.cfg.init_scale
        X = torch.rand(n_users, k, generator=g) * s
        Y = torch.rand(n_items, k, generator=g) * s
        return X.to(self.cfg.device), Y.to(self.cfg.device)

    def fit(self, feedback: sp.spmatrix, solver=None, callback=None) -> WALS:
        """feedback: (n_users, n_items) sparse matrix of feedback strengths (0 = unobserved)."""
        cfg = self.cfg
        conf = confidence_matrix(feedback, cfg.alpha)
        solver = solver or LocalBlockSolver(conf, 1, cfg.device)
        X, Y = self.init_factors(*conf.shape)
        for it in range(cfg.iterations):
            X = solver.solve("users", Y, X, cfg)  # fix Y, solve every user
            Y = solver.solve("items", X, Y, cfg)  # fix X, solve every item
            if callback is not None:
                callback(it, X, Y)
        self.user_factors, self.item_factors = X.cpu().numpy(), Y.cpu().numpy()
        return self

    def fold_in(self, items: np.ndarray, strengths: np.ndarray | None = None) -> np.ndarray:
        """A user factor for a user unseen at training time, from the items they interacted
        with: one exact WALS row solve against the trained item factors (k,)."""
        if self.item_factors is None:
            raise RuntimeError("fit or load the factors first")
        return fold_in(self.item_factors, items, strengths, self.cfg.reg, self.cfg.alpha)

    def loss(self, feedback: sp.spmatrix) -> float:
        """The full weighted loss (observed + unobserved + regularisation), for tests."""
        X, Y = self.user_factors, self.item_factors
        conf = confidence_matrix(feedback, self.cfg.alpha).toarray()
        pred = X @ Y.T
        w = np.where(conf > 0, conf, 1.0)
        p = (conf > 0).astype(np.float32)
        return float((w * (p - pred) ** 2).sum() + self.cfg.reg * ((X**2).sum() + (Y**2).sum()))


def fold_in(
    item_factors: np.ndarray,  # (n_items, k)
    items: np.ndarray,  # (n,) item indices the user interacted with
    strengths: np.ndarray | None = None,  # (n,) feedback strengths, default 1
    reg: float = 0.01,
    alpha: float = 1.0,
) -> np.ndarray:
    """Solve (YtY + reg I + Y_u^T (C_u - I) Y_u) x = Y_u^T c_u for one new user, exactly."""
    Y = np.asarray(item_factors, dtype=np.float64)
    items = np.asarray(items, dtype=np.int64)
    r = np.ones(len(items)) if strengths is None else np.asarray(strengths, dtype=np.float64)
    c = alpha * r
    Yu = Y[items]  # (n, k)
    A = Y.T @ Y + reg * np.eye(Y.shape[1]) + (Yu * (c - 1.0)[:, None]).T @ Yu
    return np.linalg.solve(A, Yu.T @ c).astype(np.float32)


def sgd_mf(
    feedback: sp.spmatrix,
    factors: int = 64,
    epochs: int = 20,
    lr: float = 0.05,
    reg: float = 0.01,
    alpha: float = 1.0,
    negatives: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The SGD variant the book compares WALS with: the same weighted loss, minimised by
    minibatch gradient descent over observed pairs plus sampled unobserved ones."""
    g = torch.Generator().manual_seed(seed)
    conf = confidence_matrix(feedback, alpha).tocoo()
    n_users, n_items = conf.shape
    X = torch.nn.Parameter(torch.rand(n_users, factors, generator=g) * 0.01)
    Y = torch.nn.Parameter(torch.rand(n_items, factors, generator=g) * 0.01)
    opt = torch.optim.Adam([X, Y], lr=lr)
    u = torch.as_tensor(conf.row.astype(np.int64))
    i = torch.as_tensor(conf.col.astype(np.int64))
    c = torch.as_tensor(conf.data)
    for _ in range(epochs):
        perm = torch.randperm(len(u), generator=g)
        for s in range(0, len(u), 8192):
            idx = perm[s : s + 8192]
            bu, bi, bc = u[idx], i[idx], c[idx]
            nu = bu.repeat(negatives)
            ni = torch.randint(0, n_items, (len(nu),), generator=g)
            pos = (X[bu] * Y[bi]).sum(1)
            neg = (X[nu] * Y[ni]).sum(1)
            loss = (bc * (1 - pos) ** 2).sum() + (neg**2).sum() * (n_items / negatives) / n_items
            loss = loss / len(idx) + reg * (X[bu].pow(2).sum() + Y[bi].pow(2).sum()) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return X.detach().numpy(), Y.detach().numpy()
