"""The deploy.sh commands of docs/migrate.md and the README, each run as written with
--dry-run, and the guide's models file."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO
from test_deploy import deploy  # noqa: F401  (the fixture: deploy.sh with a stand-in gcloud)

GUIDE = REPO / "docs" / "migrate.md"


def _deploy_commands(document=GUIDE) -> list[list[str]]:
    """Each `./deploy.sh` command of a document's shell blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", document.read_text(), re.DOTALL)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            found = re.search(r"\./deploy\.sh ([^)#]*)", line)
            if found:
                commands.append(shlex.split(found.group(1)))
    return commands


def test_the_guide_has_its_deploy_commands():
    assert len(_deploy_commands()) == 5


@pytest.mark.parametrize(
    "args", _deploy_commands() + _deploy_commands(REPO / "README.md"), ids=lambda a: " ".join(a[:6])
)
def test_each_deploy_command_of_the_guide_is_taken(deploy, args):  # noqa: F811
    status, err, out, _ = deploy(*args, "--dry-run")
    assert status == 0, err
    lines = out.splitlines()
    if "--rollback-to" in args:
        assert lines == [
            "gcloud run services update-traffic iris-fn --region us-central1 "
            "--to-revisions iris-fn-00002-xuz=100"
        ]
        return
    (deployed,) = [line for line in lines if line.startswith("gcloud functions deploy iris-fn ")]
    assert lines[-1].startswith("gcloud functions describe iris-fn ")
    if "--model" in args:
        assert "CPR_MODEL_NAME=iris" in deployed and "CPR_VERSION_NAME=v1" in deployed
    if "--service-account" in args:
        assert lines[0].startswith("gcloud storage buckets add-iam-policy-binding gs://your-bucket")


def test_the_guides_old_command_carries_over_flag_for_flag(deploy):  # noqa: F811
    text = GUIDE.read_text()
    old = re.search(r"gcloud ai-platform versions create v1 (.*?)\n```", text, re.DOTALL)
    flags = [a for a in shlex.split(old.group(1).replace("\\\n", " ")) if a.startswith("--")]
    step4 = _deploy_commands()[0]
    assert set(flags) - {"--model"} <= set(step4)


def test_the_guides_models_file_serves_two_versions(tmp_path):
    from cpr_function.config import Config
    from cpr_function.http.app import load_catalog

    (block,) = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    (tmp_path / "models.yaml").write_text(block)
    config = Config.from_env(
        {"CPR_MODELS": str(tmp_path / "models.yaml"), "CPR_CACHE_DIR": str(tmp_path / "c")}
    )
    iris = load_catalog(config).model("iris")
    assert [v.name for v in iris.versions] == ["v1", "v2"]
    assert iris.version().name == "v2"
