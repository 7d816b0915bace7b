"""The study: where it lives (Optuna's RDB storage), who works on it, and trials lost with their worker.

Every `kit tune` on a project is a worker of one study, stored in a database:
a SQLite file in the project by default, or any URL SQLAlchemy reaches
(PostgreSQL, MySQL) so workers on several machines share it. Nothing here is a
protocol of kit's own: workers meet only in Optuna's storage.

A worker holds a slot (`worker-K.lock`, an OS lock held for its whole life)
in the study's folder, and every trial it runs records its host, slot and
pid. A trial still marked running whose worker on this machine no longer
holds its slot was lost with that worker (Ctrl-C, `kill -9`, a crash); so
were those on other machines whose Optuna heartbeat stopped. Either way the
trial is marked failed and queued again with the same parameters, and the
worker that picks it up resumes its run folder when it can (same machine,
unfinished run: kit's exact resume), or trains it afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kit.config import Config
from kit.console import say
from kit.errors import ConfigError, KitError

try:
    import fcntl
except ImportError:  # Windows: no flock; lost trials are then found by the heartbeat alone
    fcntl = None  # type: ignore[assignment]

# Optuna's heartbeat, for workers on other machines: a trial whose worker has not been heard from for GRACE
# seconds is lost. Workers on this machine are checked through their slot's lock, at once.
HEARTBEAT = 20
GRACE = 120
STORAGE_FILE = "tune.db"
# Trial user attributes kit writes (the study is Optuna's; these say how a trial relates to kit).
WORKER, RUN_DIR, RESUMES, ERROR, STOPPED = "kit.worker", "kit.run_dir", "kit.resumes", "kit.error", "kit.stopped"
SIGNATURE = "kit.signature"


class TuneError(KitError):
    """A study cannot be opened or used as asked (storage, another search space, ...)."""


# ------------------------------------------------------------------ storage


def storage_url(config: Config) -> str:
    """`tune.storage`, or a SQLite file in the project; a relative SQLite path is relative to the project."""
    url = config.tune.storage or f"sqlite:///{config.project_dir / STORAGE_FILE}"
    match = re.fullmatch(r"sqlite:///(?!/)(.+)", url)
    if match and match.group(1) != ":memory:":
        url = f"sqlite:///{(config.project_dir / match.group(1)).resolve()}"
    return url


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and records."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str, requeue: Any) -> Any:
    """Optuna's RDB storage at `url`, with heartbeats and `requeue` for trials whose worker went silent.

    Raises:
        TuneError: when the URL is malformed, its database driver is missing or the database cannot be reached.
    """
    import optuna
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        _check_sqlite_folder(url)
    try:
        with warnings.catch_warnings(), _creating(url):
            warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna's words
            return _with_retry(
                lambda: optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT,
                    grace_period=GRACE,
                    heartbeat_stale_trial_callback=requeue,
                )
            )
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        missing = getattr(exc.__cause__ or exc.__context__, "name", None) or getattr(exc, "name", None) or "?"
        raise TuneError(
            f"tune.storage {shown_url(url)} needs the database driver '{missing}', which is not installed: "
            f"pip install {DRIVERS.get(missing, missing)}"
        ) from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise TuneError(
            f"tune.storage {shown_url(url)} is not a database URL kit can use ({_one_line(exc)}). Examples: "
            "sqlite:///tune.db, postgresql://user:password@host/db, mysql+pymysql://user:password@host/db."
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise TuneError(
            f"Cannot reach the study storage {shown_url(url)}: {_one_line(exc)}. Check the host, port, database "
            "name and credentials (and that the server runs), or leave tune.storage unset for a SQLite file in "
            "the project."
        ) from None


@contextlib.contextmanager
def _creating(url: str) -> Iterator[None]:
    """Workers started together on one SQLite file take turns creating its tables.

    Optuna checks for its tables, then creates them: two workers in between both create them, and the second
    fails with "table studies already exists". A lock next to the file orders them (it dies with its process).
    """
    if fcntl is None or not url.startswith("sqlite:///") or url.endswith(":memory:"):
        yield
        return
    with open(url[len("sqlite:///") :] + ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _with_retry(create: Any, tries: int = 3) -> Any:
    """`create()`, again when another worker created the same tables at the same moment (servers' databases)."""
    import sqlalchemy.exc

    for attempt in range(tries):
        try:
            return create()
        except sqlalchemy.exc.DatabaseError as exc:
            text = str(exc).lower()
            if attempt == tries - 1 or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


DRIVERS = {
    "psycopg": '"psycopg[binary]"',
    "psycopg2": "psycopg2-binary",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}


def _check_sqlite_folder(url: str) -> None:
    folder = Path(url[len("sqlite:///") :]).parent
    if not folder.is_dir():
        raise TuneError(f"tune.storage {url}: the folder {folder} does not exist; create it or choose another path.")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ------------------------------------------------------------------ the study


def study_name(config: Config) -> str:
    name = config.tune.study or config.name or config.project_dir.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        where = config.origin("tune.study")
        raise ConfigError(
            f"{where}: study name {name!r} also names its trials' folder; use letters, digits, '.', '_' and '-'."
        )
    return name


def signature(config: Config, space: Any, objective: Any) -> dict[str, Any]:
    """What every worker of one study must agree on: task, objective, search space, and the rest of the config."""
    from kit.config import resolved_dict

    base = resolved_dict(config)
    for key in ("data", "runs_dir", "plugins", "name"):  # paths differ between machines
        base.pop(key, None)
    for key in space.keys():
        _drop(base, key)
    return json.loads(json.dumps({**objective.as_dict(), "space": space.as_dict(), "config": base}, default=str))


def _drop(mapping: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if not rest:
        mapping.pop(head, None)
    elif isinstance(mapping.get(head), dict):
        _drop(mapping[head], rest)


def check_signature(study: Any, storage: Any, mine: dict[str, Any], url: str) -> None:
    """Record this worker's search on a new study; refuse to join a study that searches something else."""
    study_id = storage.get_study_id_from_name(study.study_name)
    saved = storage.get_study_user_attrs(study_id).get(SIGNATURE)
    if saved is None:
        storage.set_study_user_attr(study_id, SIGNATURE, mine)
        saved = storage.get_study_user_attrs(study_id).get(SIGNATURE, mine)  # two first workers: the stored one wins
    if saved == mine:
        return
    changed = sorted(_changes(saved, mine), key=lambda key: (not key.startswith("tune.space"), key))
    raise TuneError(
        f"Study '{study.study_name}' in {shown_url(url)} was started with another search (changed: "
        f"{', '.join(changed[:4])}); its trials would not be comparable. Use the study's kit.yaml for this worker, "
        f"or start a new study: set tune.study to another name."
    )


def _changes(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _changes(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".").replace("config.", "", 1).replace("space.", "tune.space.", 1)]


# ------------------------------------------------------------------ workers


@dataclass
class Worker:
    """This process as a worker of the study: its slot (an OS lock held while it lives) on this host."""

    folder: Path
    slot: int
    host: str
    pid: int
    handle: int

    def info(self) -> dict[str, Any]:
        return {"host": self.host, "slot": self.slot, "pid": self.pid}

    def seed(self, seed: int) -> int:
        """The sampler's seed: the same for the first worker on a host each time, different for every other."""
        return (seed + zlib.crc32(f"{self.host}/{self.slot}".encode())) % 2**32

    def release(self) -> None:
        os.close(self.handle)


def take_slot(folder: Path) -> Worker:
    """Lock the lowest free `worker-K.lock` in `folder`: K tells this worker from the others on this machine."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(1, 10_000):
        path = folder / f"worker-{slot}.lock"
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        return Worker(folder, slot, socket.gethostname(), os.getpid(), handle)
    raise TuneError(f"Every worker slot in {folder} is taken; stop some kit tune workers.")


def worker_alive(folder: Path, info: dict[str, Any]) -> bool:
    """Whether the worker `info` (a trial's `kit.worker`) of this host still runs: it holds its slot."""
    path = folder / f"worker-{info.get('slot')}.lock"
    if fcntl is None:
        return True
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # nobody holds the slot
    except BlockingIOError:
        held_by = os.pread(handle, 32, 0).decode(errors="replace").strip()
        return held_by == str(info.get("pid"))  # else a newer worker took the slot
    finally:
        os.close(handle)


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """One worker on this machine at a time looks for lost trials (so each is queued again once)."""
    handle = os.open(folder / "requeue.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


# ------------------------------------------------------------------ lost trials


def requeue(study: Any, trial: Any) -> None:
    """Queue `trial` (failed with its worker) again with the same parameters, once.

    The new trial records which one it resumes (`kit.resumes`), so its worker can carry on in the lost
    trial's run folder. Optuna calls this for trials whose heartbeat stopped; kit for the others.
    """
    import optuna

    if any(t.user_attrs.get(RESUMES) == trial.number for t in study.get_trials(deepcopy=False)):
        return
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={RESUMES: trial.number, RUN_DIR: trial.user_attrs.get(RUN_DIR)},
        )
    )


def requeue_lost(study: Any, storage: Any, folder: Path, worker: Worker) -> list[int]:
    """Fail and queue again the running trials of workers on this machine that are gone; their numbers."""
    import optuna

    lost = []
    with exclusive(folder):
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            info = trial.user_attrs.get(WORKER)
            if not isinstance(info, dict) or info.get("host") != worker.host or worker_alive(folder, info):
                continue
            if info.get("pid") == worker.pid:
                continue  # this worker's own (an interrupted trial being queued again)
            if fail_trial(study, storage, trial.number, f"its worker (pid {info.get('pid')}) stopped"):
                requeue(study, trial)
                lost.append(trial.number)
    return lost


def fail_trial(study: Any, storage: Any, number: int, reason: str) -> bool:
    """Mark trial `number` failed with `reason`; False when it had finished meanwhile."""
    import optuna

    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    try:
        storage.set_trial_user_attr(trial_id, ERROR, reason)
        return bool(storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL))
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False


def say_lost(numbers: list[int]) -> None:
    if numbers:
        shown = ", ".join(str(n) for n in numbers)
        say(f"kit: trial {shown} lost its worker; queued again (resumed from its saved state where it can be).")
