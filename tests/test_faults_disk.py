"""A cache too small for the model: refused with the sizes and the fix, never blamed on
Cloud Storage, nothing partial kept, and served once there is room.

The cache is a small tmpfs mounted by the test (as /tmp is memory on Cloud Functions);
where this machine does not let the test mount one, the tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import IRIS, counting_env, iris_expected


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 256 KiB; `grow(size)` remounts it larger, keeping what it holds."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _partials(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob("*") if ".partial-" in p.name]


def test_a_model_larger_than_the_free_space_is_refused_before_downloading(
    function, bucket, iris_dir, tmp_path, small_disk
):
    mount, grow = small_disk
    env = {**counting_env(bucket, iris_dir, tmp_path), "CPR_CACHE_DIR": str(mount / "cache")}
    bucket.blob("iris/weights.bin").upload_from_string(os.urandom(3_000_000))
    fn = function(env)
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 507
    message = answer.json()["error"]
    assert message.startswith(f"gs://{bucket.name}/iris needs 3.0 MB in the cache (<cache>) and ")
    assert (
        "MB are free there; on Cloud Functions the cache is in memory: deploy with more" in message
    )
    assert "Cloud Storage" not in message
    assert not (mount / "cache" / "objects").exists() or not any(
        (mount / "cache" / "objects").iterdir()
    ), "nothing downloaded"
    grow("16m")
    answer = fn.predict({"instances": IRIS})
    assert answer.json() == {"predictions": iris_expected(iris_dir, IRIS, centered=False)}


def test_running_out_of_space_while_downloading_is_named_and_leaves_nothing_partial(
    function, bucket, iris_dir, tmp_path, small_disk
):
    # Each object takes a whole page of the tmpfs however small it is: 200 objects of 100
    # bytes list as 20 kB, which fits, and fill 800 kB, which does not.
    mount, grow = small_disk
    env = {**counting_env(bucket, iris_dir, tmp_path), "CPR_CACHE_DIR": str(mount / "cache")}
    for n in range(200):
        bucket.blob(f"iris/shards/{n:03d}.bin").upload_from_string(os.urandom(100))
    fn = function(env)
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 507, answer.text
    message = answer.json()["error"]
    assert message.startswith("the cache (<cache>) ran out of space while writing gs://")
    assert "(No space left on device, " in message and "nothing partial was kept" in message
    assert "Cloud Storage could not be reached" not in message
    assert _partials(mount / "cache") == []
    assert fn.version_status()["loaded"] is False
    grow("16m")
    answer = fn.predict({"instances": IRIS})
    assert answer.json() == {"predictions": iris_expected(iris_dir, IRIS, centered=False)}
