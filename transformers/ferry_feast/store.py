"""Feast: preparing the shipped feature repo (``prepare``) and reading online features without blocking the
event loop (``SdkFeatures`` for the SQLite and Redis stores, ``RemoteFeatures`` for Feast's HTTP feature
server).

Feast's cold import takes 5-25 s, so it is imported only inside the functions that need it."""

from __future__ import annotations

import asyncio
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from ferry.errors import InvalidInput, NotReady

log = logging.getLogger(__name__)

OnlineStore = Literal["sqlite", "redis", "remote"]
SHIPPED_REPO = Path(__file__).resolve().parent / "feature_repo"
PROJECT = "ferry_churn"
ENTITY_KEY = "customer_id"
DATA_FILES = ("customer_stats.parquet", "transaction_stats.parquet")


def redis_connection_string(redis_url: str, timeout_s: float) -> str:
    """Feast's ``host:port,key=value`` form from ``redis://host:port[/db]`` or ``host:port``, with socket
    timeouts so a hung Redis fails a lookup instead of holding a worker thread forever."""
    address = redis_url.removeprefix("redis://")
    address, _, db = address.partition("/")
    parts = [
        address or "localhost:6379",
        f"socket_timeout={timeout_s}",
        f"socket_connect_timeout={timeout_s}",
    ]
    if db:
        parts.append(f"db={int(db)}")
    return ",".join(parts)


def feature_store_yaml(
    online_store: OnlineStore,
    *,
    redis_url: str = "localhost:6379",
    feature_server_url: str = "http://127.0.0.1:6566",
    timeout_s: float = 2.0,
) -> str:
    if online_store == "sqlite":
        online = "  type: sqlite\n  path: data/online_store.db\n"
    elif online_store == "redis":
        online = f"  type: redis\n  connection_string: {redis_connection_string(redis_url, timeout_s)!r}\n"
    elif online_store == "remote":
        online = f"  type: remote\n  path: {feature_server_url!r}\n"
    else:
        raise ValueError(f"online_store must be sqlite, redis or remote, got {online_store!r}")
    return (
        f"project: {PROJECT}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        f"online_store:\n{online}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


def prepare(
    repo_dir: str | Path,
    data_dir: str | Path,
    *,
    online_store: OnlineStore = "sqlite",
    redis_url: str = "localhost:6379",
    feature_server_url: str = "http://127.0.0.1:6566",
    materialize: bool = True,
) -> Path:
    """Write a runnable feature repo into ``repo_dir`` (the shipped definitions and a ``feature_store.yaml`` for
    the chosen online store), ``feast apply`` it, and materialise the offline data's whole time range into the
    online store. With ``remote`` the feature server owns the online store, so nothing is materialised here.
    Idempotent: running it again re-applies and re-materialises."""
    from feast import FeatureStore

    from ferry_feast.feature_repo.features import definitions

    repo_dir, data_dir = Path(repo_dir), Path(data_dir)
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"feature data directory {data_dir} lacks {', '.join(missing)}")
    (repo_dir / "data").mkdir(parents=True, exist_ok=True)
    if repo_dir.resolve() != SHIPPED_REPO:
        shutil.copyfile(SHIPPED_REPO / "features.py", repo_dir / "features.py")
    (repo_dir / "feature_store.yaml").write_text(
        feature_store_yaml(online_store, redis_url=redis_url, feature_server_url=feature_server_url)
    )
    store = FeatureStore(repo_path=str(repo_dir))
    store.apply(definitions(data_dir))
    if materialize and online_store != "remote":
        start, end = _time_range(data_dir)
        # Feast's end date is exclusive and its start inclusive: widen by a second either way.
        store.materialize(start - timedelta(seconds=1), end + timedelta(seconds=1))
    log.info("feature repo %s ready (%s online store)", repo_dir, online_store)
    return repo_dir


def _time_range(data_dir: Path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    lows, highs = [], []
    for name in DATA_FILES:
        column = pq.read_table(data_dir / name, columns=["event_timestamp"]).column("event_timestamp")
        bounds = pc.min_max(column)
        lows.append(bounds["min"].as_py())
        highs.append(bounds["max"].as_py())
    return min(lows), max(highs)


def import_feast() -> None:
    """Import Feast on the calling thread. CPython 3.11.7 fails importing Feast on a worker thread (typeguard's
    ``ast.parse``: "AST constructor recursion depth mismatch"), so entrypoints call this on the main thread
    before their event loop starts; here it is a no-op once imported."""
    import feast  # noqa: F401


class FeatureSource(Protocol):
    """Online features for a batch of entity ids: one list of values per feature, ``None`` where missing."""

    features: list[str]

    async def start(self) -> None: ...

    async def fetch(self, ids: list[str]) -> list[list[Any]]: ...

    async def close(self) -> None: ...


def _unavailable(exc: Exception) -> NotReady:
    return NotReady(f"feature store unavailable: {type(exc).__name__}: {exc}")


class SdkFeatures:
    """Reads through the Feast SDK (SQLite, Redis) on a small thread pool: the SDK is synchronous."""

    def __init__(
        self,
        repo_dir: str | Path,
        features: list[str] | None,
        feature_service: str = "",
        timeout_s: float = 2.0,
        threads: int = 4,
    ):
        self.repo_dir = Path(repo_dir)
        self.features = list(features or [])
        self.feature_service = feature_service
        self.timeout_s = timeout_s
        self._threads = threads
        self._store = None
        self._executor: ThreadPoolExecutor | None = None
        self._keys: list[str] = []
        self._online_reader: OnlineReader | None = None

    async def start(self) -> None:
        import_feast()
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="feast")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        from feast import FeatureStore

        if not (self.repo_dir / "feature_store.yaml").is_file():
            raise FileNotFoundError(
                f"{self.repo_dir} has no feature_store.yaml; run `ferry-transformer --prepare` (or "
                "ferry_feast.store.prepare) first"
            )
        self._store = FeatureStore(repo_path=str(self.repo_dir))
        if self.feature_service:
            self.features = service_features(self._store, self.feature_service)
        known = {
            f"{view.name}:{feature.name}"
            for view in self._store.list_feature_views()
            for feature in view.features
        }
        unknown = [ref for ref in self.features if ref not in known]
        if unknown:
            raise ValueError(f"features {unknown} are not in the feature repo; it has {sorted(known)}")
        self._keys = [ref.replace(":", "__") for ref in self.features]
        self._online_reader = OnlineReader.plan(self._store, self.features, self.timeout_s)
        self._fail_fast_on_redis()
        # The first lookup opens connections and loads the registry: pay for it before reporting ready.
        self._read(["__warmup__"])

    def _fail_fast_on_redis(self) -> None:
        """redis-py retries a refused connection three times with 1-8 s of backoff, so a Redis outage would hold
        every lookup past its deadline; one quick retry (a dropped idle connection) is enough here, and the
        caller gets a prompt 503 while Redis is down."""
        config = self._store.config.online_store
        if getattr(config, "type", "") != "redis" or getattr(config, "client", "redis") != "redis":
            return
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        online_store = self._store._get_provider().online_store  # Feast has no public handle on its client
        online_store._get_client(config).set_retry(Retry(NoBackoff(), retries=1))

    def _read(self, ids: list[str]) -> list[list[Any]]:
        if self._online_reader is not None:
            return self._online_reader.read(ids)
        response = self._store.get_online_features(
            features=self.features, entity_rows={ENTITY_KEY: ids}, full_feature_names=True
        ).to_dict()
        return [response[key] for key in self._keys]

    async def fetch(self, ids: list[str]) -> list[list[Any]]:
        """Features for ``ids``, one column per feature. The handler's waves already gather concurrent
        requests into one lookup, so this is one SDK read in a worker thread, with the errors mapped."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._read, ids), self.timeout_s
            )
        except asyncio.TimeoutError:
            # A store that does not answer is as unavailable as one that refuses: 503, and retry later.
            raise NotReady(f"feature store unavailable: no answer within {self.timeout_s} s") from None
        except (InvalidInput, NotReady):
            raise
        except Exception as exc:
            # Connection refused, socket timeouts, a locked or missing SQLite file: "not now".
            log.warning("feature lookup failed: %s", exc)
            raise _unavailable(exc) from None

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


_ID_FIELDS = {"STRING": ("string_val", str), "INT64": ("int64_val", int)}  # entity type -> Value field


class OnlineReader:
    """Feast's per-feature-view read, ``OnlineStore.online_read`` (the interface every online store implements),
    without the SDK's request planning and response assembly around it: for plain feature views keyed by the
    one entity, ``get_online_features`` does exactly these reads (Feast 0.67 checks no TTL online) and then
    spends ~35 us per entity building and converting protobuf responses, more than the SQLite query or Redis
    round trip itself (benchmarks/transformer_latency.py). Anything else (on-demand views, several join keys)
    keeps the SDK path: ``plan`` returns None. The SQLite store is read by ``SqliteRows``."""

    def __init__(self, rows, reads: list, id_type, features: list[str]):
        self.rows = rows  # (feature view, entities, names) -> per entity: {name: ValueProto} or None
        self.reads = reads  # (feature view, its requested feature names)
        self.id_type = id_type
        self.features = features

    @classmethod
    def plan(cls, store, features: list[str], timeout_s: float = 2.0) -> OnlineReader | None:
        from feast.errors import FeatureViewNotFoundException
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        by_view: dict[str, list[str]] = {}
        for ref in features:
            view_name, _, name = ref.partition(":")
            by_view.setdefault(view_name, []).append(name)
        reads, id_types = [], set()
        for view_name, names in by_view.items():
            try:
                view = store.get_feature_view(view_name)
            except FeatureViewNotFoundException:
                return None  # an on-demand or stream view: the SDK knows how to serve it
            if len(view.entities) != 1 or [c.name for c in view.entity_columns] != [ENTITY_KEY]:
                return None
            id_types.add(store.get_entity(view.entities[0]).value_type.name)
            reads.append((view, names))
        if len(id_types) != 1 or next(iter(id_types)) not in _ID_FIELDS:
            return None
        id_field, id_type = _ID_FIELDS[id_types.pop()]
        online_store = store._get_provider().online_store  # Feast has no public handle on it
        rows = None
        if isinstance(online_store, SqliteOnlineStore):
            rows = SqliteRows.open(online_store, store.config, id_field, timeout_s)
        if rows is None:
            rows = _StoreRows(online_store, store.config, id_field)
        return cls(rows, reads, id_type, features)

    def read(self, ids: list[str]) -> list[list[Any]]:
        try:
            entities = [self.id_type(entity) for entity in ids]
        except ValueError:
            raise InvalidInput(
                f"customer ids must be integers for this feature repo, got {ids[:5]}"
            ) from None
        columns: dict[str, list[Any]] = {}
        for view, names in self.reads:
            found = self.rows(view, entities, names)
            for name in names:
                columns[f"{view.name}:{name}"] = [_python_value(values, name) for values in found]
        return [columns[ref] for ref in self.features]


def _entity_keys(id_field: str, entities: list) -> list:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(**{id_field: e})]) for e in entities]


class _StoreRows:
    """Rows through the online store's own ``online_read`` (Redis, and any other store)."""

    def __init__(self, online_store, config, id_field: str):
        self.online_store = online_store
        self.config = config
        self.id_field = id_field

    def __call__(self, view, entities: list, names: list[str]) -> list[dict | None]:
        keys = _entity_keys(self.id_field, entities)
        # A copy of the names: Feast's Redis store appends its timestamp key to the list it is given.
        rows = self.online_store.online_read(
            config=self.config, table=view, entity_keys=keys, requested_features=list(names)
        )
        return [found for _, found in rows]


class SqliteRows:
    """The SQLite online store's rows, read from the table Feast materialises into (same file, table name and
    entity key serialisation, all from Feast itself), without what ``SqliteOnlineStore.online_read`` spends per
    row on values nobody reads online: it selects every feature of an entity and parses each row's timestamp
    into a timezone-aware datetime (more than half of a 16-id read). This selects only the requested features
    and no timestamps, on a read-only connection per worker thread (no shared connection to serialise on), with
    SQLite's busy timeout bounded by the lookup's own timeout. Serialised entity keys are kept per id (bounded)."""

    KEY_CACHE_SIZE = 65536

    def __init__(self, path: str, config, id_field: str, timeout_s: float):
        import threading

        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.sqlite import _quote_id, _table_id
        from feast.protos.feast.types.Value_pb2 import Value

        self.path = path
        self.config = config
        self.id_field = id_field
        self.timeout_s = timeout_s
        self._value = Value
        self._local = threading.local()
        self._serialize = serialize_entity_key
        self._table = lambda view: _quote_id(
            _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
        )
        self._keys: dict = {}

    @classmethod
    def open(cls, online_store, config, id_field: str, timeout_s: float) -> SqliteRows | None:
        path = online_store._get_db_path(config)
        # Not materialised yet: Feast's own read creates the file (and finds nothing); leave that to it.
        return cls(path, config, id_field, timeout_s) if Path(path).is_file() else None

    def _connection(self):
        import sqlite3

        connection = getattr(self._local, "connection", None)
        if connection is None:
            uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, timeout=self.timeout_s, check_same_thread=False)
            self._local.connection = connection
        return connection

    def _key(self, entity) -> bytes:
        key = self._keys.get(entity)
        if key is None:
            if len(self._keys) >= self.KEY_CACHE_SIZE:
                self._keys.clear()
            key = self._keys[entity] = self._serialize(
                _entity_keys(self.id_field, [entity])[0],
                entity_key_serialization_version=self.config.entity_key_serialization_version,
            )
        return key

    def __call__(self, view, entities: list, names: list[str]) -> list[dict | None]:
        keys = [self._key(entity) for entity in entities]
        unique = list(dict.fromkeys(keys))
        query = (
            f"SELECT entity_key, feature_name, value FROM {self._table(view)} "
            f"WHERE entity_key IN ({','.join('?' * len(unique))}) "
            f"AND feature_name IN ({','.join('?' * len(names))})"
        )
        found: dict[bytes, dict] = {}
        for key, name, blob in self._connection().execute(query, [*unique, *names]):
            value = self._value()
            value.ParseFromString(blob)
            found.setdefault(key, {})[name] = value
        return [found.get(key) for key in keys]


def _python_value(found: dict | None, name: str) -> Any:
    """A ValueProto's Python value (None where the entity or feature is missing)."""
    if not found or name not in found:
        return None
    value = found[name]
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    content = getattr(value, kind)
    return list(content.val) if kind.endswith("_list_val") else content


def service_features(store, name: str) -> list[str]:
    """A feature service's features as ``view:feature`` references, in the service's order."""
    service = store.get_feature_service(name)
    return [
        f"{projection.name_to_use()}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


class RemoteFeatures:
    """Reads from Feast's HTTP feature server (``feast serve``) with an async client: no thread, no SDK."""

    def __init__(
        self, url: str, features: list[str] | None, feature_service: str = "", timeout_s: float = 2.0
    ):
        self.url = url.rstrip("/")
        self.features = list(features or [])
        self.feature_service = feature_service
        self.timeout_s = timeout_s
        self._client = None
        if feature_service or not self.features:
            # The feature server answers a feature service's features in an order of its own (measured: not
            # the service's), and the model needs its column order: name the features explicitly.
            raise ValueError(
                "with Feast's feature server (online_store=remote), name the features in the model's column "
                "order with --features; a feature service's order is not kept by the server"
            )

    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        await self._request(["__warmup__"])  # reachable, and it knows every feature

    async def _request(self, ids: list[str]) -> tuple[list[str], list[dict]]:
        import httpx

        body = {"entities": {ENTITY_KEY: ids}, "features": self.features, "full_feature_names": True}
        try:
            response = await self._client.post("/get-online-features", json=body)
        except httpx.TimeoutException:
            raise NotReady(
                f"feature store unavailable: {self.url} did not answer within {self.timeout_s} s"
            ) from None
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from None
        if response.status_code != 200:
            raise NotReady(
                f"feature server {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        payload = response.json()
        return payload["metadata"]["feature_names"], payload["results"]

    async def fetch(self, ids: list[str]) -> list[list[Any]]:
        names, results = await self._request(ids)
        by_name = dict(zip(names, results, strict=True))
        columns = []
        for ref in self.features:
            column = by_name[ref.replace(":", "__")]
            statuses = column.get("statuses") or ["PRESENT"] * len(ids)
            columns.append(
                [v if s == "PRESENT" else None for v, s in zip(column["values"], statuses, strict=True)]
            )
        return columns

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
