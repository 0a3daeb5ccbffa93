"""`make dist`: open the built sdist and wheel and check that they ship what a user needs.

``twine check --strict`` (run first by ``make dist``) proves the metadata and long description
render; this checks the contents: the Apache-2.0 licence text in both artifacts, the example DAGs
and their data in both (so a user who installed the wheel can find them), ``py.typed``, the entry
points Airflow and the ``qmatic-sandbox`` command need, the classifiers, and the README's links.

The links follow whether the project is published, which its metadata says: until then it declares
no project URL (no repository or site exists to name), the README is read in the repository, and
its relative links (``docs/quickstart.md``) must lead to a file there. Once it declares URLs, all of
Documentation, Source, Issues and Changelog are required and the README's links must be absolute,
since a package index page shows the README where relative links lead nowhere. Prints what it
checked; exits 1 naming every problem.

Usage: ``python scripts/check_dist.py dist``
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_qmatic"
# The example DAGs: example_dags/ in the repository and the sdist, the package's example_dags/ in
# the wheel (pyproject.toml's force-include).
EXAMPLES = sorted(
    p.relative_to(REPO).as_posix()
    for p in (REPO / "example_dags").rglob("*")
    if p.is_file() and "__pycache__" not in p.parts
)
LICENSE = (REPO / "LICENSE").read_text()
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The project URLs a published release declares (none before: see the module docstring).
URLS = ("Documentation", "Source", "Issues", "Changelog")
# A Markdown link or image whose target is neither absolute nor an in-page anchor.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|#)([^)]+)\)")


def check_metadata(meta: Message, where: str) -> list[str]:
    problems = []
    if meta.get("License-Expression") != "Apache-2.0":
        problems.append(f"{where}: License-Expression is {meta.get('License-Expression')!r}, not Apache-2.0")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        problems.append(f"{where}: no License-File: LICENSE")
    classifiers = set(meta.get_all("Classifier") or [])
    for version in PYTHONS:
        if f"Programming Language :: Python :: {version}" not in classifiers:
            problems.append(f"{where}: no classifier for Python {version}")
    if not any(c.startswith("Development Status ::") for c in classifiers):
        problems.append(f"{where}: no Development Status classifier")
    description = meta.get_payload()
    assert isinstance(description, str)
    if "pip install" not in description:
        problems.append(f"{where}: the long description (README) lost its install section")
    return problems + check_links(meta, description, where)


def check_links(meta: Message, description: str, where: str) -> list[str]:
    """Unpublished (no Project-URL): relative README links resolve in the repository. Published:
    every URL in ``URLS`` is declared and README links are absolute."""
    urls = {u.split(",", 1)[0].strip() for u in meta.get_all("Project-URL") or []}
    relative = RELATIVE_LINK.findall(description)
    if not urls:
        return [
            f"{where}: README link {target!r} leads to no file in the repository"
            for target in relative
            if not (REPO / target.split("#", 1)[0]).is_file()
        ]
    problems = [
        f"{where}: no Project-URL {name} (a published release declares all of {URLS})"
        for name in URLS
        if name not in urls
    ]
    return problems + [
        f"{where}: README link {target!r} is relative: dead on the package index page of a project with URLs"
        for target in relative
    ]


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        dist_info = next(n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info"))
        problems = [
            f"{path.name}: missing {name}"
            for name in (f"{PACKAGE}/{e}" for e in EXAMPLES)
            if name not in names
        ]
        for needed in (
            f"{PACKAGE}/py.typed",
            f"{dist_info}/licenses/LICENSE",
            f"{dist_info}/entry_points.txt",
        ):
            if needed not in names:
                problems.append(f"{path.name}: missing {needed}")
        if problems:
            return problems
        if wheel.read(f"{dist_info}/licenses/LICENSE").decode() != LICENSE:
            problems.append(f"{path.name}: LICENSE differs from the repository's")
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        for needed in ("[apache_airflow_provider]", "qmatic-sandbox = "):
            if needed not in entry_points:
                problems.append(f"{path.name}: entry point {needed!r} missing")
        problems += [f"{path.name}: ships {n}" for n in names if n.startswith(("tests/", "benchmarks/"))]
        meta = HeaderParser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    return problems + check_metadata(meta, path.name)


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        root = sdist.getnames()[0].split("/", 1)[0]
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        needed = [*EXAMPLES, f"{PACKAGE}/py.typed", "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"]
        problems = [f"{path.name}: missing {name}" for name in needed if name not in names]
        if problems:
            return problems

        def read(name: str) -> str:
            member = sdist.extractfile(f"{root}/{name}")
            assert member is not None
            return member.read().decode()

        if read("LICENSE") != LICENSE:
            problems.append(f"{path.name}: LICENSE differs from the repository's")
        meta = HeaderParser().parsestr(read("PKG-INFO"))
    return problems + check_metadata(meta, path.name)


def main(dist: Path) -> int:
    if not all(s in LICENSE for s in ("Apache License", "Version 2.0, January 2004", "END OF TERMS")):
        print("LICENSE is not the full Apache License 2.0 text")
        return 1
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"{dist}: expected one wheel and one sdist, found {[p.name for p in wheels + sdists]}")
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(
        f"{wheels[0].name} and {sdists[0].name}: LICENSE (Apache-2.0), py.typed, {len(EXAMPLES)} "
        "example DAG files, entry points, classifiers, and project URLs and README links that agree: ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
