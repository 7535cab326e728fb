from crdt_state.schema import AGENT, SHARED
from tests.support import new_mesh


def test_runtime_and_device_converge() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(name="phone")
    assert mesh.connect(phone)
    phone.write(SHARED, "messages", "m1", {"text": "hi"})
    mesh.runtime.write(AGENT, "replies", "r1", {"text": "hello"})
    mesh.settle()
    assert mesh.runtime.read(SHARED, "messages") == {"m1": {"text": "hi"}}
    assert phone.read(AGENT, "replies") == {"r1": {"text": "hello"}}
    assert mesh.runtime.engine.status(phone.key).synced
    assert phone.engine.status(mesh.runtime.key).synced
