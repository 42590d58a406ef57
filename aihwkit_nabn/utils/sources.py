"""Where a dataset is read from: a path the user gives, an environment variable, or ``../shared/data/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

from ..errors import DataNotFoundError

PathLike = Union[str, os.PathLike]

#: The repository root of a checkout (the folder holding the package), searched besides the current directory.
REPO_ROOT = Path(__file__).resolve().parents[2]


def find_source(what: str, archive: str, env: str, source: Optional[PathLike] = None, hint: str = "") -> Path:
    """Return the data source to read: ``source``, else ``$env``, else ``../shared/data/<archive>``.

    The search looks for ``../shared/data/<archive>`` relative to the current directory and to the
    repository root. ``what`` names the data in messages; ``hint`` says what else ``source`` may be.

    Raises:
        DataNotFoundError (a ``FileNotFoundError``): the given path or the variable's does not exist, or
            nothing was found; the message lists every place that was tried and how to pass a path.
    """
    if source is not None:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"{what} source {str(path)!r} does not exist")
        return path
    value = os.environ.get(env)
    if value:
        path = Path(value).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"${env} points to {str(path)!r}, which does not exist")
        return path
    tried: List[Path] = []
    for base in (Path.cwd(), REPO_ROOT):
        candidate = (base / ".." / "shared" / "data" / archive).resolve()
        if candidate not in tried:
            tried.append(candidate)
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"could not find the {what} data. Looked for: " + ", ".join(str(p) for p in tried)
        + f". Pass source=<path> (the {archive} archive{hint}) or set ${env}=<path>."
    )
