"""Fixtures of the system tests: the artefacts, the session's booted system, fresh containers.

The session's system is booted once and set up as the README's recipe says (install the .deb,
write the config, restart the agent); tests that change it put back what they changed. Tests
that need a system of their own (upgrade, purge, the image recipe) take ``fresh_container``.
Where this machine cannot boot a container, every test here fails with one line saying why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.container import (
    Container,
    Standin,
    add_todo_list_app,
    agent_config,
    configure_agent,
    current_deb,
    install_package,
    missing_for_boot,
    rootfs,
    standin_python,
    write_like_the_tutorial,
)


@dataclass(frozen=True)
class Artefacts:
    rootfs: Path  # the cached root file system (lower layer of every container)
    deb: Path  # this checkout's .deb
    python: Path  # the stand-in's Python


@dataclass
class System:
    container: Container
    standin: Standin
    first_lines: dict[str, float]  # written right after installing: text -> unix time


@pytest.fixture(scope="session")
def artefacts() -> Artefacts:
    missing = missing_for_boot()
    if missing:
        pytest.fail(f"system tests cannot run: {missing}", pytrace=False)
    deb = current_deb()
    return Artefacts(rootfs(), deb, standin_python(deb))


def machine_name(purpose: str) -> str:
    return f"sfwd-{purpose}-{os.getpid() % 100000}"


@pytest.fixture(scope="session")
def boot(artefacts: Artefacts) -> Iterator[Callable[[str], Container]]:
    """Boots containers on the cached root file system; each is destroyed at the end, pass or fail."""
    booted: list[Container] = []

    def boot_one(purpose: str) -> Container:
        container = Container(machine_name(purpose), artefacts.rootfs, artefacts.python)
        booted.append(container)
        container.boot()
        return container

    yield boot_one
    for container in booted:
        container.destroy()


@pytest.fixture()
def fresh_container(boot: Callable[[str], Container], request: pytest.FixtureRequest) -> Iterator[Container]:
    """A container of the test's own, powered off and removed when the test ends."""
    container = boot(request.node.name.removeprefix("test_")[:20].replace("_", "-"))
    yield container
    container.destroy()


@pytest.fixture(scope="session")
def system(boot: Callable[[str], Container], artefacts: Artefacts) -> System:
    """The session's booted system, set up by the README's recipe; the first lines written at once."""
    container = boot("main")
    standin = Standin(container)
    standin.install()
    standin.start()
    add_todo_list_app(container)
    install_package(container, artefacts.deb)
    configure_agent(container, agent_config(standin))
    return System(container, standin, write_like_the_tutorial(container, "first-after-install"))
