"""The image recipe: the Packer template's provisioners, run as written in a fresh container.

python-hcl2 reads the template's provisioner blocks; Debian's `packer console` evaluates its
expressions (the config it renders from the variables, the .deb's path), so the shell lines run
with exactly what Packer would give them. The container then boots again, as an instance of the
image would, and the tutorial's chain must work there at once, with credentials from the
instance's RAM role: a metadata service on 100.100.100.200 and the PutLogs stand-in, both ready
before the agent starts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hcl2
import pytest

from tests.system.conftest import Artefacts
from tests.system.container import (
    REPO,
    Container,
    Standin,
    add_todo_list_app,
    assert_delivered_like_logtail,
    unit_property,
    write_like_the_tutorial,
)

pytestmark = pytest.mark.system

TEMPLATE = REPO / "packaging" / "packer" / "slsfwd.pkr.hcl"
METADATA_ADDRESS = "100.100.100.200"  # what the rendered config's sls.ecs_metadata_url defaults to


def provisioners() -> list[tuple[str, dict]]:
    """(type, body) of each provisioner of the template's build block, strings unquoted."""
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with TEMPLATE.open() as source:
        [build] = hcl2.load(source, serialization_options=options)["build"]
    return [next(iter(block.items())) for block in build["provisioner"]]


def evaluate(templates: list[str], variables: dict[str, str]) -> list[str]:
    """HCL string templates evaluated by Packer itself (`packer console`) against the template."""
    expression = f"jsonencode([{', '.join(json.dumps(t) for t in templates)}])\n"
    argv = ["packer", "console", *(f"-var={k}={v}" for k, v in variables.items()), str(TEMPLATE.relative_to(REPO))]
    result = subprocess.run(argv, input=expression, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip())


def run_shell_provisioner(container: Container, body: dict, variables: dict[str, str]) -> None:
    """As Packer's shell provisioner: the inline lines as one `/bin/sh -e` script, run with environment_vars."""
    environment = evaluate(body.get("environment_vars", []), variables)
    script = "#!/bin/sh -e\n" + "\n".join(evaluate(body["inline"], variables)) + "\n"
    container.write("/tmp/packer-shell-provisioner.sh", script, mode=0o755)
    container.run("env", *environment, "/tmp/packer-shell-provisioner.sh", timeout=300)


def test_the_image_recipe_gives_an_image_whose_agent_ships_at_first_boot(
    fresh_container: Container, artefacts: Artefacts
) -> None:
    container = fresh_container
    standin = Standin(container, metadata_address=METADATA_ADDRESS)
    standin.install(enable=True)  # the cloud around the instance: up before slsfwd at every boot
    standin.start()
    add_todo_list_app(container)
    variables = {"source_image": "debian-12-test", "sls_project": "system-test", "sls_logstore": "todo-list",
                 "sls_endpoint": f"http://127.0.0.1:{standin.port}"}

    kinds = [kind for kind, _ in provisioners()]
    assert kinds == ["file", "shell"], kinds
    for kind, body in provisioners():
        if kind == "file":  # the upload: the .deb `make deb` built, under the name the template expects
            [source, destination] = evaluate([body["source"], body["destination"]], variables)
            assert Path(source).name == artefacts.deb.name, "the template's slsfwd_version is not agent.__version__"
            container.copy_in(artefacts.deb, str(Path(destination) / Path(source).name))
        else:
            run_shell_provisioner(container, body, variables)

    assert list(container.file("/var/lib/slsfwd").iterdir()) == [], "the build instance's spool would ship from clones"
    config = container.file("/etc/slsfwd/slsfwd.toml").read_text()
    assert 'ecs_ram_role = "slsfwd-ecs"' in config and "access_key" not in config  # no AccessKey on the image
    container.poweroff()
    container.boot()  # an instance of the image
    assert unit_property(container, "slsfwd.service", "ActiveState") == "active"
    # The stand-in accepts only the STS credentials of the metadata service: the agent used the role.
    assert_delivered_like_logtail(standin, write_like_the_tutorial(container, "from-the-image"), within_s=5)
