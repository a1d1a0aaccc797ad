"""The state store contract, on both backends (Redis: a private redis-server), and the snapshot format."""

from __future__ import annotations

import pickle
import uuid

import pytest

from monitor.state.memory import MemoryStateStore
from monitor.state.redis_store import RedisStateStore
from monitor.state.snapshots import FORMAT_VERSION, SnapshotError, decode, encode
from monitor.state.store import StateStore, StoreUnavailable
from tests.helpers.redis import private_redis, private_sentinel
from tests.helpers.server import free_port


@pytest.fixture(scope="module")
def redis_server():
    with private_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store(request) -> StateStore:
    if request.param == "memory":
        yield MemoryStateStore(dedup_capacity=1000)
        return
    server = request.getfixturevalue("redis_server")
    s = RedisStateStore.from_url(server.url, key_prefix=f"test:{uuid.uuid4().hex}:", dedup_ttl_seconds=3600)
    yield s
    s.close()


def test_add_ids_says_which_ids_are_new(store):
    assert isinstance(store, StateStore)
    assert store.add_ids(["a", "b", "a"]) == [True, True, False]
    assert store.add_ids(["b", "c"]) == [False, True]
    assert store.add_ids([]) == []


def test_discarded_ids_count_as_new_again(store):
    store.add_ids(["x", "y"])
    store.discard_ids(["x"])
    assert store.add_ids(["x", "y"]) == [True, False]


def test_snapshots_are_replaced_whole_and_missing_ones_are_none(store):
    assert store.load_snapshot("service") is None
    store.save_snapshot("service", b"first")
    store.save_snapshot("service", b"second")
    store.save_snapshot("reference", b"\x00\xff")
    assert store.load_snapshot("service") == b"second"
    assert store.load_snapshot("reference") == b"\x00\xff"


def test_memory_dedup_forgets_the_oldest_ids_beyond_capacity():
    store = MemoryStateStore(dedup_capacity=2)
    store.add_ids(["a", "b", "c"])
    assert store.add_ids(["a", "c"]) == [True, False]


def test_redis_ids_expire_after_the_ttl_and_stay_under_the_prefix(redis_server):
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStateStore.from_url(redis_server.url, key_prefix=prefix, dedup_ttl_seconds=120)
    store.add_ids(["evt-1"])
    store.save_snapshot("service", b"s")
    client = redis_server.client()
    assert 0 < client.ttl(f"{prefix}id:evt-1") <= 120
    assert client.ttl(f"{prefix}snapshot:service") == -1  # snapshots never expire
    assert sorted(client.scan_iter(match=f"{prefix}*")) == [f"{prefix}id:evt-1".encode(), f"{prefix}snapshot:service".encode()]
    other = RedisStateStore(client, key_prefix=f"test:{uuid.uuid4().hex}:")
    assert other.add_ids(["evt-1"]) == [True]  # another monitor on the same Redis is not affected
    assert other.load_snapshot("service") is None


def test_unreachable_redis_raises_store_unavailable_naming_the_operation():
    store = RedisStateStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.2)
    with pytest.raises(StoreUnavailable, match=r"redis: remembering event ids failed: ConnectionError"):
        store.add_ids(["a"])
    with pytest.raises(StoreUnavailable, match=r"redis: saving snapshot 'service' failed"):
        store.save_snapshot("service", b"s")
    with pytest.raises(StoreUnavailable, match=r"redis: loading snapshot 'service' failed"):
        store.load_snapshot("service")


def test_redis_store_rejects_a_ttl_below_one_second(redis_server):
    with pytest.raises(ValueError, match="dedup_ttl_seconds"):
        RedisStateStore(redis_server.client(), dedup_ttl_seconds=0)


def test_snapshot_round_trip_keeps_state_and_adds_format_and_seq():
    state = {"detectors": {"d": {"n": 3}}, "event_time": 12.5}
    decoded = decode(encode(state, seq=7, saved_at=100.0))
    assert decoded == {**state, "format": FORMAT_VERSION, "seq": 7, "saved_at": 100.0}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not a pickle", "snapshot: not readable"),
        (pickle.dumps(["a", "list"]), "snapshot: not a monitor snapshot"),
        (pickle.dumps({"format": FORMAT_VERSION + 1}), f"snapshot: format {FORMAT_VERSION + 1}, this version reads format {FORMAT_VERSION}"),
    ],
)
def test_unusable_snapshots_are_refused_with_a_clear_error(data, message):
    with pytest.raises(SnapshotError, match=message):
        decode(data)


def test_redis_store_finds_the_primary_through_sentinel(redis_server, tmp_path):
    with private_sentinel(redis_server, tmp_path) as url:
        prefix = f"test:{uuid.uuid4().hex}:"
        store = RedisStateStore.from_url(url, key_prefix=prefix)
        assert store.add_ids(["via-sentinel"]) == [True]
        assert redis_server.client().exists(f"{prefix}id:via-sentinel")


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://:pw@/mymaster"])
def test_a_sentinel_url_without_master_or_host_is_refused_naming_the_setting(url):
    with pytest.raises(ValueError, match="redis_url: expected redis\\+sentinel://") as refused:
        RedisStateStore.from_url(url)
    assert ":pw@" not in str(refused.value)  # the password is never shown
