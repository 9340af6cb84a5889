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
