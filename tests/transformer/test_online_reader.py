"""The direct online read (``OnlineReader``) returns exactly what the Feast SDK's get_online_features returns, on
the real SQLite and Redis online stores, including ids with no features."""

from __future__ import annotations

import pytest
from ferry_feast.settings import DEFAULT_FEATURES
from ferry_feast.store import ENTITY_KEY, OnlineReader


@pytest.mark.parametrize("repo_fixture", ["sqlite_repo", "redis_repo"])
def test_online_reader_equals_the_sdk(request, repo_fixture, expected_features):
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(request.getfixturevalue(repo_fixture)))
    features = list(DEFAULT_FEATURES)
    reader = OnlineReader.plan(store, features)
    assert reader is not None, "plain feature views keyed by customer_id take the direct path"
    direct = "SqliteRows" if repo_fixture == "sqlite_repo" else "_StoreRows"
    assert type(reader.rows).__name__ == direct
    ids = [*list(expected_features)[:40], "NO-SUCH-CUSTOMER"]
    sdk = store.get_online_features(features=features, entity_rows={ENTITY_KEY: ids}, full_feature_names=True)
    wanted = sdk.to_dict()
    for _ in range(3):  # repeated reads: Feast's Redis store once grew the list of feature names it was given
        got = reader.read(ids)
        assert got == [wanted[ref.replace(":", "__")] for ref in features]
    assert all(column[-1] is None for column in got)
    assert got[0][0] is not None


def test_on_demand_or_unknown_views_keep_the_sdk_path(sqlite_repo):
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(sqlite_repo))
    assert OnlineReader.plan(store, ["no_such_view:tenure"]) is None


def test_the_sqlite_reader_sees_new_writes_and_only_the_features_asked_for(tmp_path, feature_data):
    """The SQLite store is read from its table directly (``SqliteRows``): a value written to the online store
    after the reader opened is what the next read returns (entity keys are cached, values never), and a feature
    not asked for is not read."""
    from datetime import datetime, timezone

    import pandas as pd
    from feast import FeatureStore
    from ferry_feast.store import SqliteRows, prepare

    store = FeatureStore(repo_path=str(prepare(tmp_path / "repo", feature_data)))
    reader = OnlineReader.plan(store, ["customer_stats:tenure", "customer_stats:contract"])
    assert isinstance(reader.rows, SqliteRows)
    before = reader.read(["C00007", "C00007"])  # the same id twice gets the same values twice
    assert before[0][0] == before[0][1] is not None
    found = reader.rows(store.get_feature_view("customer_stats"), ["C00007"], ["tenure"])
    assert list(found[0]) == ["tenure"]

    row = {
        "customer_id": ["C00007"],
        "tenure": [before[0][0] + 100],
        "monthly_charges": [1.0],
        "total_charges": [2.0],
        "contract": [2],
        "loyalty_score": [0.5],
        "event_timestamp": [datetime.now(timezone.utc)],
    }
    store.write_to_online_store("customer_stats", pd.DataFrame(row))
    assert reader.read(["C00007"]) == [[before[0][0] + 100], [2]]


def test_a_store_not_materialised_yet_is_read_through_feast(tmp_path, feature_data):
    import sqlite3

    from feast import FeatureStore
    from ferry_feast.store import SqliteRows, prepare

    repo = prepare(tmp_path / "repo", feature_data)
    (repo / "data" / "online_store.db").unlink()
    store = FeatureStore(repo_path=str(repo))
    reader = OnlineReader.plan(store, ["customer_stats:tenure"])
    assert not isinstance(reader.rows, SqliteRows)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):  # Feast's own read, and its error
        reader.read(["C00007"])
