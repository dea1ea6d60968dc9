"""Version floors, read once with packaging's own parser: what `name>=floor` a requirement declares.

pyproject.toml declares the oldest version of each package the workbook was run with; the first
cell of every notebook (helpers.workbook.check_versions), the tests and `make floors`
(scripts/check_floors.py) all read those floors through :func:`declared_floors`.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


def name_and_floor(requirement: str) -> tuple[str, str]:
    """("torch", "2.3") for "torch>=2.3"; ("jupyterlab", "") without a `>=` floor. Names in canonical form.

    A text that is not a requirement raises ValueError naming it.
    """
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as error:
        raise ValueError(f"{requirement!r} is not a requirement: {error}") from None
    floors = [spec.version for spec in parsed.specifier if spec.operator == ">="]
    return canonicalize_name(parsed.name), max(floors, key=Version, default="")


def declared_floors(requirements: Iterable[str], extra: str | None = None) -> dict[str, str]:
    """{name: floor} for every requirement with a `>=` floor; those of an extra only when `extra` names it.

    Requirements as importlib.metadata.requires() lists them ('nbval>=0.11; extra == "test"') or
    as pyproject.toml writes them.
    """
    found = {}
    for requirement in requirements:
        marker = Requirement(requirement).marker
        if marker is not None and not marker.evaluate({"extra": extra or ""}):
            continue
        name, floor = name_and_floor(requirement)
        if floor:
            found[name] = floor
    return found


def is_below(version: str, floor: str) -> bool:
    """True when `version` ("2.14.1+cu130") is older than `floor` ("2.3"); an unreadable version is not."""
    try:
        return Version(version) < Version(floor)
    except InvalidVersion:
        return False
