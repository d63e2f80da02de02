"""`--ray [ADDRESS]`: each cell is a Ray task on whichever node has the CPUs and memory it asks for.

The model and the data go into Ray's object store once and every task reads them from there
(no shared filesystem needed). A task runs in a worker that serves that one task and exits
(max_calls=1): its memory goes back, as a local cell's child process's does. A worker that
dies (killed, out of memory, its node lost) is a system failure that Ray retries up to
`retries` times; an error of edgekit's own is the cell's record, not retried: it would fail
again. Each task returns its cell folder as a tar archive, unpacked here into the store,
unless the store is a folder every node shares (`--store`), which the task writes directly.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from edgekit.errors import InputError, first_line, require


def check_reachable(address: str) -> None:
    """`ray` is installed and, for a HOST:PORT address, something listens there. ray.init on a
    dead address waits minutes before it fails; this says so in seconds, before anything is written."""
    import re
    import socket

    require("ray", "ray")
    match = re.fullmatch(r"(?:ray://)?\[?([^\]\s]+?)\]?:(\d+)", address)
    if not match:
        if address not in ("", "auto", "local"):
            raise InputError(f"--ray {address}: give the head's HOST:PORT (or ray://HOST:PORT, auto, local), "
                             "or --ray alone for Ray's default cluster")
        return
    host, port = match[1], int(match[2])
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise InputError(f"--ray {address}: nothing answers there ({exc.strerror or exc}); start the head with "
                         f"`ray start --head --port={port}`, or check the address") from None


class RayEngine:
    def __init__(self, address: str | None, store: Path, shared_store: bool, cpus_per_cell: int, memory_mb: float,
                 retries: int):
        self.address = address
        self.store = store
        self.shared_store = shared_store
        self.cpus_per_cell = cpus_per_cell
        self.memory_mb = memory_mb
        self.retries = retries
        self.cluster: dict = {}  # what the cluster had when the cells ran, for sweep.json
        self.archive_cap = ARCHIVE_MIN_CAP

    def run(self, specs: list[dict], done: Callable[[dict], None], inputs: dict[str, Path | None]) -> None:
        ray = require("ray", "ray")
        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            self.cluster = {"nodes": len([n for n in ray.nodes() if n["Alive"]]),
                            "cpus": ray.cluster_resources().get("CPU", 0)}
            self._check_fits(ray)
            self.store.mkdir(parents=True, exist_ok=True)
            self.archive_cap = archive_cap(inputs.get("model"))
            shipped = {name: ray.put(pack_input(name, path)) if path else None for name, path in inputs.items()}
            task = ray.remote(max_calls=1)(run_cell_task).options(  # max_calls is the function's, not a call's
                num_cpus=self.cpus_per_cell, memory=int(self.memory_mb * (1 << 20)), max_retries=self.retries,
                retry_exceptions=False, name="edgekit-sweep-cell")
            shared = str(self.store.resolve()) if self.shared_store else None
            pending = {task.remote(spec, shared, **shipped): spec for spec in specs}  # refs as arguments: Ray
            # hands the task their values, read from the object store of its node
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    spec = pending.pop(ready[0])
                    done(self._collect(ray, ready[0], spec))
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray) -> None:
        import signal
        import threading

        # ray.init makes SIGTERM exit the process at once; edgekit's handler (the CLI's: unwind
        # like Ctrl-C) is put back, so a cancelled job still cancels its tasks and says what it kept
        previous = signal.getsignal(signal.SIGTERM)
        try:
            # Without a working_dir Ray puts the driver's current folder on every worker's import
            # path: a numpy.py left there ran in the cells. An empty one is uploaded instead
            # (and each task works in a folder of its own, see run_cell_task).
            with tempfile.TemporaryDirectory(prefix="edgekit-ray-empty-") as empty:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         configure_logging=True, runtime_env={"working_dir": empty})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"--ray {self.address or ''}: cannot connect to a Ray cluster ({first_line(exc, 200)}); "
                             "start one with `ray start --head`, or give its ADDRESS (HOST:PORT)") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)

    def _check_fits(self, ray) -> None:
        """A task no node can hold would wait for ever: refuse it now, saying what the nodes have."""
        need_cpu, need_mem = self.cpus_per_cell, self.memory_mb * (1 << 20)
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        if not any(r.get("CPU", 0) >= need_cpu and r.get("memory", 0) >= need_mem for r in nodes):
            biggest = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("memory", 0)), default={})
            raise InputError(f"--ray: no node of the cluster has {need_cpu} CPU and {self.memory_mb:,.0f} MiB for a "
                             f"cell (the largest has {biggest.get('CPU', 0):g} CPU and "
                             f"{biggest.get('memory', 0) / (1 << 20):,.0f} MiB); lower --cpus-per-cell or add a node")

    def _collect(self, ray, ref, spec: dict) -> dict:
        from ray.exceptions import RayError, RayTaskError

        try:
            record, archive = ray.get(ref)
        except RayTaskError as exc:  # the task's own code raised: a bug (run_cell records edgekit's errors)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            return _lost(spec, 3, f"internal error in the cell's Ray task: {type(cause).__name__}: "
                                  f"{first_line(cause, 300)}")
        except RayError as exc:  # the worker or its node died on every try, or the task was cancelled
            return _lost(spec, 2, f"the Ray task failed {self.retries + 1} times ({type(exc).__name__}): "
                                  f"{first_line(exc, 300)}")
        if archive is not None:
            try:
                replace_folder(self.store / spec["folder"], archive, self.archive_cap)
            except (tarfile.TarError, InputError, OSError) as exc:  # a truncated or hostile archive
                return _lost(spec, 2, f"the cell's files could not be unpacked here: {first_line(exc, 300)}")
        return record


def _lost(spec: dict, exit_code: int, error: str) -> dict:
    return {"name": spec["name"], "key": spec["key"], "folder": spec["folder"], "status": "failed",
            "exit_code": exit_code, "error": error, "note": None, "seconds": None, "peak_rss_mb": None,
            "worker": {"engine": "ray"}}


def run_cell_task(spec: dict, shared_store: str | None, **shipped: bytes | None):
    """The Ray task: unpack the model and data (packed files, from the object store), run the
    cell, return its record and (unless the store is shared) its folder as a tar archive."""
    import ray

    from edgekit.support.output_folders import scratch_folder
    from edgekit.sweeps.cell import run_cell

    with scratch_folder() as work_path:  # owned by this worker: the next task removes it if this one is killed
        inputs = {name: unpack(blob, work_path / name) if blob is not None else None for name, blob in shipped.items()}
        outdir = Path(shared_store) / spec["folder"] if shared_store else work_path / "out" / spec["folder"]
        local = {**spec, **{k: str(v) if v else None for k, v in inputs.items()}, "outdir": str(outdir),
                 "engine": "ray", "node": ray.util.get_node_ip_address()}
        os.chdir(work_path)  # whatever a library drops in the current folder goes with the task
        record = run_cell(local)
        return record, None if shared_store else pack(outdir)


def pack_input(name: str, path: Path) -> bytes:
    """The model as it is; a data folder as the image listing a local cell would read (links
    followed, one level of class folders): the same data on Ray as on the local pool."""
    if name == "model" or not Path(path).is_dir():
        return pack(path)
    from edgekit.intake.data import image_folder_listing

    option = "--val" if name == "val" else "--data"
    classes, files = image_folder_listing(Path(path), option)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as archive:
        top = name  # not the folder's own name, which may be "" (--data .)
        archive.add(str(path), arcname=top, recursive=False)
        for folder in classes:
            archive.add(str(folder), arcname=f"{top}/{folder.name}", recursive=False)
        for _, file in files:
            archive.add(str(file), arcname=f"{top}/{file.parent.name}/{file.name}", recursive=False)
    return buffer.getvalue()


def pack(path: Path) -> bytes:
    """A file or folder as an uncompressed tar (weights and int8 files hardly compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(str(path), arcname=Path(path).name)
    return buffer.getvalue()


# What a cell can write: fp32, fp16 and int8 files in three formats, each at most the model's
# size, plus reports. An archive bigger than this is not a cell's output (1 MiB unpacked to 1 GiB).
ARCHIVE_MODEL_FACTOR = 16
ARCHIVE_MIN_CAP = 64 << 20


def archive_cap(model: Path | None) -> int:
    size = Path(model).stat().st_size if model else 0
    return ARCHIVE_MODEL_FACTOR * size + ARCHIVE_MIN_CAP


def unpack(blob: bytes, into: Path, expected: str | None = None, max_bytes: int | None = None) -> Path:
    """The one file or folder of `pack`, under `into`. Every member must be a regular file or a
    folder inside that one entry (named `expected` when given): no links, devices, absolute or
    climbing names, no `.` as the entry; and the sizes must add up to at most max_bytes."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as archive:
        members = archive.getmembers()
        top = _check_members(members, expected, max_bytes)
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: its checks too
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
    return into / top


def _check_members(members: list, expected: str | None, max_bytes: int | None) -> str:
    tops, total = set(), 0
    for member in members:
        parts = member.name.rstrip("/").split("/")  # as written: Path() would drop a "." part
        if not (member.isfile() or member.isdir()):
            raise InputError(f"a cell archive holds {member.name[:200]!r}, which is not a plain file or folder")
        if any(part in ("", ".", "..") for part in parts):
            raise InputError(f"a cell archive holds {member.name[:200]!r}, which is not inside the cell's folder")
        tops.add(parts[0])
        total += member.size
    if len(tops) != 1 or (expected is not None and tops != {expected}):
        raise InputError(f"a cell archive holds {len(tops)} top-level entries, not the cell's folder alone")
    if max_bytes is not None and total > max_bytes:
        raise InputError(f"a cell archive unpacks to {total:,} bytes, over the {max_bytes:,} a cell can write")
    return tops.pop()


def replace_folder(folder: Path, archive: bytes, max_bytes: int | None = None) -> None:
    """The store's folder of a cell becomes the archive's, whole: unpacked beside it, then swapped."""
    incoming = Path(tempfile.mkdtemp(prefix=f".{folder.name}.incoming-", dir=folder.parent))
    try:
        unpacked = unpack(archive, incoming, expected=folder.name, max_bytes=max_bytes)
        if unpacked.is_symlink() or not unpacked.is_dir():
            raise InputError("a cell archive holds no folder for the cell")
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.is_symlink() or folder.is_file():
            folder.unlink()  # a link planted in the store is replaced, never followed
        elif folder.exists():
            folder.rename(old)
        unpacked.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
