"""Where run artifacts live: a directory every node mounts at the same path, or an object-store URI.

``spec.artifacts`` is either a path (on a cluster: a shared filesystem, checked before launch by
:func:`check_visible`) or a URI that fsspec opens (``s3://bucket/prefix`` with s3fs, ``gs://`` with gcsfs,
``file:///mnt/shared/...``). With a URI the experiment still sees plain directories: the worker gives the run a
local scratch ``ctx.artifact_dir`` and uploads it to ``<uri>/<study>/<cell key>`` when the run ends
(:func:`publish`); a ``store:`` reference to such a run is downloaded into a local cache before the run
(:func:`localise`). So a run's adapter reaches the next study whatever node either lands on.

Import-light (runs in workers): fsspec is imported when a URI is used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import WavesweepError

# Downloaded inputs, per node: one copy per URI, reused by later runs on the node.
CACHE = Path(tempfile.gettempdir()) / "wavesweep-artifacts"


def is_uri(location: str) -> bool:
    return "://" in location


def check_location(location: str) -> str | None:
    """Why ``location`` cannot hold artifacts (an unknown protocol, its fsspec package missing), or None."""
    if not is_uri(location):
        return None
    import fsspec

    protocol = location.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return f"fsspec knows no protocol {protocol!r} (known: file, s3, gs, az, ...)"
    except ImportError as exc:
        return f"protocol {protocol!r} needs a package that is not installed ({exc})"
    return None


def run_location(artifacts: str, study: str, cell_key: str) -> str:
    """Where a run's artifacts go: ``<artifacts>/<study>/<cell key>``, a URI or an absolute path."""
    if is_uri(artifacts):
        return f"{artifacts.rstrip('/')}/{study}/{cell_key}"
    return str(Path(artifacts).resolve() / study / cell_key)


def scratch_for(location: str) -> str:
    """The directory the run writes into: the location itself for a path, a fresh local one for a URI."""
    if not is_uri(location):
        return location
    return tempfile.mkdtemp(prefix="wavesweep-run-")


def publish(local: str, location: str) -> str | None:
    """After the run: the location holding what it wrote, or None when it wrote nothing. For a URI the scratch
    directory is uploaded (replacing an earlier attempt's files) and removed."""
    wrote = os.path.isdir(local) and bool(os.listdir(local))
    if not is_uri(location):
        return location if wrote else None
    try:
        if not wrote:
            return None
        import fsspec

        fs, root = fsspec.core.url_to_fs(location)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        fs.put(local.rstrip("/") + "/", root, recursive=True)
        return location
    finally:
        shutil.rmtree(local, ignore_errors=True)


def localise(params: dict, inputs: dict[str, str]) -> dict:
    """``params`` with each input (a resolved ``store:`` reference) that is a URI replaced by a local copy."""
    local = dict(params)
    for name, location in inputs.items():
        if is_uri(location):
            local[name] = _download(location)
    return local


def _download(location: str) -> str:
    import fsspec

    target = CACHE / hashlib.sha256(location.encode()).hexdigest()[:24]
    if target.is_dir():
        return str(target)
    fs, root = fsspec.core.url_to_fs(location)
    if not fs.exists(root):
        raise WavesweepError(f"artifact {location} does not exist (deleted after the run that wrote it?)")
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=_cache_dir()))
    fs.get(root.rstrip("/") + "/", str(partial) + "/", recursive=True)
    try:
        partial.rename(target)  # atomic: a concurrent run on the node sees the whole copy or none
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another run got there first
    return str(target)


def _cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def check_visible(location: str, nodes_seeing: Callable[[str], dict[str, bool]]) -> None:
    """Refuse a path some node of the cluster cannot see. ``nodes_seeing(marker)`` returns, per node, whether a
    file the driver just wrote at ``marker`` exists there (the executor runs one probe task on each node)."""
    if is_uri(location):
        return
    root = Path(location).resolve()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".wavesweep-probe-{os.urandom(8).hex()}"
    marker.write_text("visible")
    try:
        seen = nodes_seeing(str(marker))
    finally:
        marker.unlink(missing_ok=True)
    blind = sorted(node for node, ok in seen.items() if not ok)
    if blind:
        raise WavesweepError(
            f"artifacts: {str(root)!r} is not visible on {len(blind)} of {len(seen)} node(s) ({', '.join(blind)}): "
            "a run's artifacts would stay on its node, and a later store: reference landing on another node would "
            "not find them. Use a filesystem every node mounts at this path, or an object-store URI "
            "(artifacts: s3://bucket/prefix, gs://..., file:///shared/path; fsspec)")
