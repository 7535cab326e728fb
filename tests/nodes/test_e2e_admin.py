"""An admin device invites, certifies and revokes, with real processes on 127.0.0.1.

The runtime and the devices are real ``agentmesh`` subprocesses. The phone joins
with ``admin``; it then opens an invite (first with no node of its own running:
the command dials the runtime itself; then through its running node), certifies
a key, approves a waiting join and revokes a device. A read-only device is
refused, and so is everything an admin may not do.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mesh.identity import Identity
from tests.nodes.processes import (
    CLI,
    STARTED,
    device_process,
    free_port,
    run,
    runtime_process,
    wait_until,
)


def invite(data_dir: Path, *extra: str, check: bool = True) -> str:
    result = run("invite", "--json", "--data-dir", str(data_dir), *extra, check=check)
    if not check:
        return result.stderr
    return str(json.loads(result.stdout)["code"])


def devices(rt_dir: Path) -> dict[str, dict[str, object]]:
    rows = json.loads(run("devices", "--json", "--data-dir", str(rt_dir)).stdout)
    return {str(row["name"]): row for row in rows}


def test_an_admin_device_invites_certifies_approves_and_revokes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    rt_dir, phone_dir = tmp_path / "runtime", tmp_path / "phone"
    runtime = runtime_process(rt_dir, free_port(), logs)
    runtime.start()
    runtime.read_line_with("listening")
    admin_caps = "read,write,approve,admin"
    phone_code = invite(rt_dir, "--caps", admin_caps)
    run("join", phone_code, "--name", "phone", "--data-dir", str(phone_dir))
    watch_dir = tmp_path / "watch"
    run("join", invite(rt_dir, "--caps", "read"), "--name", "watch", "--data-dir", str(watch_dir))

    # No phone node running: the command dials the runtime with the phone's key.
    laptop_dir = tmp_path / "laptop"
    code = invite(phone_dir, "--caps", "read,write", "--name", "laptop")
    run("join", code, "--data-dir", str(laptop_dir))
    assert devices(rt_dir)["laptop"]["caps"] == ["read", "write"]

    phone = device_process(phone_dir, "", logs)
    phone.args = ["device", "run"]
    phone.start()
    laptop = device_process(laptop_dir, "", logs)
    laptop.args = ["device", "run"]
    laptop.start()
    wait_until("phone synced", phone.synced)

    # Through the running node: a join that needs approval, approved from the phone.
    tablet_dir = tmp_path / "tablet"
    code = invite(phone_dir, "--caps", "read", "--name", "tablet", "--require-approval")
    joiner = subprocess.Popen(
        [*CLI, "join", code, "--data-dir", str(tablet_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(joiner)
    waiting: list[dict[str, str]] = []

    def someone_waits() -> bool:
        result = run("devices", "waiting", "--json", "--data-dir", str(phone_dir))
        waiting[:] = json.loads(result.stdout)
        return bool(waiting)

    wait_until("the tablet waits for approval", someone_waits)
    run("devices", "approve", waiting[0]["device"], "--data-dir", str(phone_dir))
    out, err = joiner.communicate(timeout=120)
    assert joiner.returncode == 0, err
    assert waiting[0]["sas"] in out  # both sides showed the same code
    assert devices(rt_dir)["tablet"]["caps"] == ["read"]

    # A key certified by the phone (the scripted path, admin-signed).
    spare = Identity.generate()
    run(
        "devices",
        "add",
        spare.peer_id,
        "--caps",
        "read",
        "--name",
        "spare",
        "--data-dir",
        str(phone_dir),
    )
    assert devices(rt_dir)["spare"]["caps"] == ["read"]

    # Refused, with the runtime's reason, and nothing changes.
    before = devices(rt_dir)
    assert "more than" in invite(phone_dir, "--caps", "read,runtime", check=False)
    refused = run(
        "devices",
        "add",
        Identity.generate().peer_id,
        "--caps",
        "read,runtime",
        "--data-dir",
        str(phone_dir),
        check=False,
    )
    assert refused.returncode == 1 and "more than" in refused.stderr
    refused = run(
        "revoke",
        Identity.load(rt_dir / "identity.key").peer_id,
        "--data-dir",
        str(phone_dir),
        check=False,
    )
    assert refused.returncode == 1 and "root" in refused.stderr
    assert "admin" in invite(watch_dir, "--caps", "read", check=False)
    refused = run("revoke", str(before["laptop"]["id"]), "--data-dir", str(watch_dir), check=False)
    assert refused.returncode == 1 and "admin" in refused.stderr
    assert devices(rt_dir) == before

    # The phone revokes the laptop: it is dropped, learns it and says so.
    run("revoke", str(before["laptop"]["id"]), "--data-dir", str(phone_dir))
    wait_until("laptop knows it is revoked", lambda: laptop.status().get("revoked") is True)
    assert devices(rt_dir)["laptop"]["revoked"] is True
    wait_until(
        "phone learns the revocation", lambda: devices(phone_dir)["laptop"]["revoked"] is True
    )
    assert laptop.stop() == 0
    assert phone.stop() == 0
    assert runtime.stop() == 0
