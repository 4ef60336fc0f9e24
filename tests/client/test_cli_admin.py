"""Shipping models with `infer publish`, `infer route` and `infer retire`, and the client's admin methods.

They run on a stack of their own (tests/shipping.py): its registry and Redis are copies nobody else reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from inference_client import AsyncClient, Client, Conflict, Forbidden, Shadow

from tests.service import ADMIN_KEY, KEY
from tests.shipping import feature_names, own_stack, small_forest
from tools.stack import Stack, wait_until

INFER = [sys.executable, "-m", "inference_client"]
MODEL = "breast-cancer"


@pytest.fixture(scope="module")
def base(
    stack_factory: Callable[..., Stack], registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Return the URL of this module's own stack."""
    return own_stack(stack_factory, registry_path, tmp_path_factory.mktemp("cli-admin"))


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return a small breast-cancer forest (skops) and its reference rows (CSV)."""
    return small_forest(MODEL, tmp_path_factory.mktemp("forest"))


@pytest.fixture
def admin(base: str) -> Iterator[Client]:
    """Return an admin client; after the test, every new job goes to 1.0.0 again, with no shadow."""
    with Client(base, ADMIN_KEY) as client:
        yield client
        client.set_routing(MODEL, {"1.0.0": 100})


def _infer(base: str, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    """Run `infer` as a person would, the admin key in INFER_ADMIN_KEY (user key in INFER_API_KEY)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFER_")}
    env.update({"INFER_API": base, "INFER_API_KEY": KEY, "INFER_ADMIN_KEY": key, "COLUMNS": "120"})
    return subprocess.run([*INFER, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_version_is_published_routed_to_routed_back_and_retired_from_the_cli(
    base: str, admin: Client, forest: tuple[Path, Path]
) -> None:
    """Publish 1.1.0 (features and labels from the served version), route 90/10, back to 1.0.0, retire it."""
    artifact, reference = forest
    published = _infer(
        base, "publish", MODEL, str(artifact), "--version", "1.1.0", "--reference", str(reference)
    )
    assert published.returncode == 0, published.stderr
    assert "the features, task and labels of breast-cancer 1.0.0" in published.stderr
    assert "running: a worker is checking" in published.stderr
    assert "Published breast-cancer 1.1.0 (runtime onnx" in published.stdout
    assert f"infer route {MODEL} 1.0.0=90 1.1.0=10" in published.stdout  # the next step, ready to paste
    wait_until(lambda: "1.1.0" in admin.model(MODEL).versions, 10, "1.1.0 listed")  # within a second
    assert admin.routing(MODEL).routes == {"1.0.0": 100}  # a new version gets no traffic by itself

    routed = _infer(base, "route", MODEL, "1.0.0=90", "1.1.0=10")
    assert routed.returncode == 0, routed.stderr
    assert admin.routing(MODEL).routes == {"1.0.0": 90, "1.1.0": 10}
    shown = _infer(base, "route", MODEL, key="")  # reading a routing needs no admin key
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[1]: line for line in shown.stdout.splitlines() if line.startswith("│ 1.")}
    assert " 90 % " in rows["1.0.0"]
    assert "default" in rows["1.0.0"]
    assert " 10 % " in rows["1.1.0"]
    assert f"infer route {MODEL} 1.0.0=100" in shown.stdout  # the rollback, ready to paste

    refused = _infer(base, "retire", MODEL, "1.1.0")
    assert refused.returncode == 6, refused.stderr
    assert "is routed" in refused.stderr
    assert f"infer route {MODEL} OTHER_VERSION=100" in refused.stderr
    back = _infer(base, "route", MODEL, "1.0.0=100")
    assert back.returncode == 0, back.stderr
    assert admin.routing(MODEL).routes == {"1.0.0": 100}

    retired = _infer(base, "retire", MODEL, "1.1.0")
    assert retired.returncode == 0, retired.stderr
    assert "Retired breast-cancer 1.1.0" in retired.stdout
    assert "1.1.0" not in admin.model(MODEL).versions
    again = _infer(base, "retire", MODEL, "1.1.0")
    assert again.returncode == 4
    assert "has no version" in again.stderr


def test_a_user_key_on_an_admin_command_is_told_it_needs_an_admin_key(
    base: str, admin: Client, forest: tuple[Path, Path]
) -> None:
    """Route, retire and publish with a user key exit 3 saying an admin key is needed, changing nothing."""
    artifact, _ = forest
    for args in (
        ("route", MODEL, "1.0.0=50", "2.0.0=50"),
        ("retire", MODEL, "1.0.0"),
        ("publish", MODEL, str(artifact), "--version", "9.0.0"),
    ):
        denied = _infer(base, *args, key=KEY)
        assert denied.returncode == 3, denied.stderr
        assert f"`infer {args[0]}` needs an admin key" in denied.stderr
        assert "INFER_ADMIN_KEY" in denied.stderr
    assert admin.routing(MODEL).routes == {"1.0.0": 100}
    assert "9.0.0" not in admin.model(MODEL).versions


def test_refusals_of_publish_and_route_say_why_with_their_exit_codes(
    base: str, admin: Client, forest: tuple[Path, Path], tmp_path: Path
) -> None:
    """A worker's refusal exits 9 with its reason; a taken version 6; bad weights 5; a bad command line 2."""
    artifact, reference = forest
    wrong = _infer(base, "publish", MODEL, str(artifact), "--version", "1.5.0", "--labels", "yes,no")
    assert wrong.returncode == 9, wrong.stderr
    assert "Not published" in wrong.stderr
    assert "classes_" in wrong.stderr
    assert "1.5.0" not in admin.model(MODEL).versions

    taken = _infer(base, "publish", MODEL, str(artifact), "--version", "1.0.0")
    assert taken.returncode == 6, taken.stderr
    assert "Publish under a new --version" in taken.stderr

    summed = _infer(base, "route", MODEL, "1.0.0=90")
    assert summed.returncode == 5, summed.stderr
    assert "request: the weights sum to 90, not 100" in summed.stderr
    unknown = _infer(base, "route", MODEL, "1.0.0=90", "7.0.0=10")
    assert unknown.returncode == 5, unknown.stderr
    assert "no published version 7.0.0" in unknown.stderr

    pickled = tmp_path / "forest.joblib"
    pickled.write_bytes(artifact.read_bytes())  # its name alone says it may run code when loaded
    for args, said in (
        (("route", MODEL, "1.0.0:100"), "VERSION=WEIGHT"),
        (("publish", MODEL, str(tmp_path / "missing.skops"), "--version", "1.6.0"), "Cannot read"),
        (("publish", "new-model", str(artifact), "--version", "0.1.0"), "new model: give --features, --task"),
        (("publish", MODEL, str(pickled), "--version", "1.6.0"), "--allow-pickle"),
    ):
        usage = _infer(base, *args)
        assert usage.returncode == 2, usage.stderr
        assert said in usage.stderr
    meta = tmp_path / "meta.json"
    features = [{"name": n} for n in feature_names(MODEL)]  # of type number when none is given
    meta.write_text(json.dumps({"version": "0.2.0", "task": "classification", "features": features}))
    new = _infer(
        base, "publish", "cancer-small", str(artifact), "--metadata", str(meta), "--reference", str(reference)
    )
    assert new.returncode == 0, new.stderr
    assert "first version of cancer-small" in new.stdout
    wait_until(lambda: "cancer-small" in {m.name for m in admin.models()}, 10, "the new model listed")
    assert admin.model("cancer-small").version == "0.2.0"


def test_the_client_sets_a_shadow_reads_its_agreement_and_retires_sync_and_async(
    base: str, admin: Client, forest: tuple[Path, Path]
) -> None:
    """AsyncClient publishes 1.2.0; a shadow of it on every job is compared; routed back, it is retired."""
    artifact, reference = forest
    metadata = {"version": "1.2.0", "task": "classification", "labels": ["benign", "malignant"],
                "features": [{"name": n, "type": "number"} for n in feature_names(MODEL)]}  # fmt: skip

    async def publish() -> str:
        async with AsyncClient(base, ADMIN_KEY) as client:
            job = await (await client.publish(MODEL, artifact, metadata, reference)).wait(240)
            routing = await client.set_routing(MODEL, {"1.0.0": 100}, Shadow("1.2.0", 1.0))
            assert routing.shadow == Shadow("1.2.0", 1.0)
            assert (await client.shadow(MODEL)).version == "1.2.0"
            return job.status

    assert asyncio.run(publish()) == "succeeded"
    assert admin.routing(MODEL).default == "1.0.0"
    rows = [[float(v) for v in line.split(",")] for line in reference.read_text().splitlines()[1:6]]
    with Client(base, KEY) as user:
        outputs = user.predict(MODEL, rows, timeout=120)
        with pytest.raises(Forbidden):
            user.set_routing(MODEL, {"1.2.0": 100})
    assert len(outputs) == 5
    wait_until(lambda: admin.shadow(MODEL).compared >= 5, 60, "the shadow's comparisons")
    report = admin.shadow(MODEL)
    assert report.agreement is not None
    assert 0 <= report.agreement <= 1
    with pytest.raises(Conflict):
        admin.retire(MODEL, "1.2.0")  # the shadow is routed

    async def retire() -> list[str]:
        async with AsyncClient(base, ADMIN_KEY) as client:
            await client.set_routing(MODEL, {"1.0.0": 100})
            await client.retire(MODEL, "1.2.0")
            return (await client.model(MODEL)).versions

    assert "1.2.0" not in asyncio.run(retire())
