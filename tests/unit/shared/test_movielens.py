"""MovieLens 100K reader and the ANCHORS.md split protocols, on the real data."""

import numpy as np
import pandas as pd
import pytest

from mlsd.data.movielens import (
    MovieLensNotFound,
    interaction_matrix,
    load_movielens,
    random_split,
    temporal_split,
)


@pytest.fixture(scope="module")
def ml():
    return load_movielens()


def test_sizes_and_columns(ml):
    assert len(ml.ratings) == 100_000
    assert ml.ratings.user_id.nunique() == 943 and ml.ratings.item_id.nunique() == 1682
    assert set(ml.ratings.rating.unique()) <= {1, 2, 3, 4, 5}
    assert ml.items.loc[ml.items.item_id == 1, "title"].item() == "Toy Story (1995)"
    assert ml.items.loc[ml.items.item_id == 1, "year"].item() == 1995
    assert {"age", "gender", "occupation", "zip_code"} <= set(ml.users.columns)


def test_temporal_split_holds_out_each_users_latest(ml):
    train, test = temporal_split(ml.ratings)
    assert len(train) + len(test) == len(ml.ratings)
    n = ml.ratings.groupby("user_id").size()
    expect = np.maximum(1, np.floor(0.2 * n)).astype(int)
    assert (test.groupby("user_id").size() == expect).all()
    last_train = train.groupby("user_id").timestamp.max()
    first_test = test.groupby("user_id").timestamp.min()
    assert (last_train <= first_test.reindex(last_train.index)).all()


def test_random_split_is_seeded_and_per_user(ml):
    a_train, a_test = random_split(ml.ratings)
    b_train, b_test = random_split(ml.ratings)
    pd.testing.assert_frame_equal(a_test, b_test)
    share = a_test.groupby("user_id").size() / ml.ratings.groupby("user_id").size()
    assert share.between(0.2, 0.3).all()


def test_interaction_matrix_values(ml):
    small = ml.ratings.head(50)
    m = interaction_matrix(small, ml.n_users, ml.n_items, "watched")
    assert m.nnz == 50 and set(m.data) == {1.0}
    r = interaction_matrix(small, ml.n_users, ml.n_items, "rating")
    u, i, v = small.iloc[0][["user_id", "item_id", "rating"]]
    assert r[u, i] == v
    with pytest.raises(ValueError):
        interaction_matrix(small, ml.n_users, ml.n_items, "clicks")


def test_grouplens_folder_and_missing(tmp_path, ml):
    ml.ratings.head(20).to_csv(tmp_path / "u.data", sep="\t", header=False, index=False)
    items = ml.items.head(5)
    with open(tmp_path / "u.item", "w", encoding="latin-1") as f:
        for _, r in items.iterrows():
            f.write(f"{r.item_id}|{r.title}|01-Jan-1995||url|" + "|".join(["0"] * 19) + "\n")
    ml.users.head(5).to_csv(tmp_path / "u.user", sep="|", header=False, index=False)
    got = load_movielens(tmp_path)
    assert len(got.ratings) == 20 and got.items.year.iloc[0] == 1995
    with pytest.raises(MovieLensNotFound):
        load_movielens(tmp_path / "nowhere")


def test_release_dates_are_unix_seconds(ml):
    """Whatever resolution pandas parses dates to: Star Wars came out on 1977-01-01."""
    items = ml.items.set_index("item_id")
    assert items.loc[50, "release_ts"] == pd.Timestamp("1977-01-01").timestamp() == 220_924_800
    assert items.loc[50, "year"] == 1977
