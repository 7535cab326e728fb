"""Local writes that no peer would accept are refused and undone, never signed."""

from __future__ import annotations

import pytest
from pycrdt import Map

from crdt_state.replica import LocalWriteRefused
from crdt_state.schema import SHARED
from crdt_state.views import doc_to_py
from mesh.limits import MAX_TRANSACTION_UPDATE_BYTES
from tests.support import NOW, new_mesh, seeded_identity


def test_a_nested_type_is_refused_at_seal_and_the_batch_undone() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    mesh.connect(phone)
    phone.write(SHARED, "messages", "kept", {"text": "sealed before"})
    mesh.settle()
    phone.write(SHARED, "messages", "lost", {"text": "same batch as the bad write"})
    with phone.engine.transact(SHARED, NOW) as ydoc:
        ydoc.get("messages", type=Map)["nested"] = Map({"a": 1})
    with pytest.raises(LocalWriteRefused, match="outside the document schema"):
        phone.replica.seal(SHARED, NOW)
    assert doc_to_py(phone.replica.doc(SHARED), SHARED)["messages"] == {
        "kept": {"text": "sealed before"}
    }
    assert phone.replica.local_refusals
    # The chain is not wedged: later writes sync.
    phone.write(SHARED, "messages", "after", {"text": "fine"})
    mesh.settle()
    assert set(mesh.runtime.read(SHARED, "messages")) == {"kept", "after"}


def test_seal_due_keeps_running_after_a_refused_batch() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    with phone.engine.transact(SHARED, NOW) as ydoc:
        ydoc.get("memory", type=Map)["nested"] = Map({"a": 1})
    phone.engine.tick(NOW + 1_000)  # must not raise
    assert phone.replica.next_seal_ms() is None
    assert "outside the document schema" in phone.replica.local_refusals[-1]


def test_an_oversized_transaction_is_refused_at_once() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    with (
        pytest.raises(LocalWriteRefused, match="exceeds"),
        phone.engine.transact(SHARED, NOW) as ydoc,
    ):
        ydoc.get("memory", type=Map)["blob"] = "x" * (MAX_TRANSACTION_UPDATE_BYTES + 1)
    assert doc_to_py(phone.replica.doc(SHARED), SHARED)["memory"] == {}
