"""PostgreSQL-only behaviour of CatalogStore (the shared store tests run on both backends in test_storage.py)."""

from __future__ import annotations

import threading

import pytest
from pg_server import postgres_server, postgres_url  # noqa: F401  (fixtures)

from mixrec.catalog import Interaction, Item
from mixrec.storage import CatalogStore, DuplicateItemsError


def test_replicas_creating_the_schema_together_do_not_collide(postgres_url):
    stores: list[CatalogStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(CatalogStore(postgres_url))
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors and len(stores) == 4
        stores[0].add_items([Item(item_id="a", type="video", title="A")])
        assert [it.item_id for it in stores[3].list_items()] == ["a"]
    finally:
        for s in stores:
            s.close()


def test_racing_adds_of_one_id_leave_one_winner(postgres_url):
    outcomes: list[str] = []

    def add(n: int) -> None:
        with CatalogStore(postgres_url, create=False) as s:
            try:
                s.add_items([Item(item_id="same", type="audio", title=f"from {n}")])
                outcomes.append("added")
            except DuplicateItemsError as e:
                assert e.item_ids == ["same"]
                outcomes.append("duplicate")

    CatalogStore(postgres_url).close()
    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["added"] + ["duplicate"] * 3


def test_connection_pool_and_hidden_password(postgres_url):
    url = postgres_url.replace("mixrec@", "mixrec:s3cret@")  # trust auth ignores the password
    with CatalogStore(url, pool_size=3, max_overflow=2) as s:
        assert "s3cret" not in s.url and s.backend == "postgresql"
        assert s._engine.pool.size() == 3
        s.add_items([Item(item_id="a", type="product", title="A")])
        assert s.record_feedback([Interaction("u", "a")]) == [1]


def test_unreachable_server_fails_loudly():
    with pytest.raises(Exception, match="(?i)connect|refused"):
        CatalogStore("postgresql+psycopg://nobody@127.0.0.1:1/none")
