"""orbax checkpoints of the whole TrainState: restore-or-init, save, wait.

- Saves are asynchronous; ``wait()`` blocks until they are on disk and raises
  if a background save failed (call it before exit, also on error paths).
- orbax writes each step into a temporary folder and renames it when
  complete, so a killed save is never taken for a checkpoint; leftovers are
  removed when a Checkpointer opens the folder (synchronously: no background
  thread outlives a Checkpointer that never saved).
- Retention deletes a step by renaming it into ``checkpoints/.deleted``
  first (orbax's ``todelete_subdir``), then removing it there: a kill during
  deletion leaves only complete steps, and a half-removed folder in
  ``.deleted`` that the next Checkpointer removes.
- The ``checkpoints`` folder is created by the first save, not by opening it,
  so evaluating or drawing a run without checkpoints writes nothing.
- Restores use an abstract target whose shardings come from the *current*
  mesh, so a checkpoint saved on N devices restores onto M devices.
- No pickle: arrays go through orbax, the config is JSON.
- In a single process each array is written whole from its first replica
  (``_whole_arrays_in_one_process``); orbax's replica-parallel saving, where every
  replica writes a slice so that several hosts share the work, stays on for
  multi-process runs.
- A checkpoint written before a model's variables were renamed is read through the
  method's renames (``rename``): the restore target is put in the old names, and
  what is read back in the new ones.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import shutil
import sys
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

CONFIG_FILE = "config.json"
# Old steps are renamed into this subfolder of checkpoints/ and removed from there.
DELETED_SUBDIR = ".deleted"
# orbax's suffix of a step being written (``<step>.orbax-checkpoint-tmp-<time>``).
TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A checkpoint, or another file of a run, could not be saved or restored."""


def _one_line(e: BaseException, head: int = 200, tail: int = 300) -> str:
    """The error on one line; long ones keep their start and their end (the OS reason)."""
    text = " ".join(str(e).split()).split(" [tensorstore_spec=")[0] or type(e).__name__
    return text if len(text) <= head + tail else f"{text[:head]} ... {text[-tail:]}"


def _remove_tree(path: str) -> None:
    """Removes a folder and everything in it (a seam for tests that kill mid-deletion)."""
    shutil.rmtree(path, ignore_errors=True)


def _is_primary() -> bool:
    return jax.process_index() == 0


def _renamed_path(path: str, renames: dict[str, str]) -> str:
    """``path`` with its longest prefix (whole components) found in ``renames`` replaced."""
    parts = path.split("/")
    for n in range(len(parts), 0, -1):
        head = "/".join(parts[:n])
        if head in renames:
            return "/".join([renames[head], *parts[n:]])
    return path


def _rename_model(tree: dict, renames: dict[str, str]) -> dict:
    flat = traverse_util.flatten_dict(tree, sep="/", keep_empty_nodes=True)
    moved = {_renamed_path(k, renames): v for k, v in flat.items()}
    if len(moved) != len(flat):
        raise ValueError(f"renames {renames} map two variables to one path")
    return traverse_util.unflatten_dict(moved, sep="/")


def rename(tree, renames: dict[str, str]):
    """``tree`` with the paths of its model variables renamed.

    Every dict in ``tree`` that has a ``"backbone"`` entry is a model's variables
    (params, BatchNorm statistics, the optimiser's moments, an EMA copy); in each,
    a variable whose "/"-joined path starts with an old path of ``renames``
    (``{"projector": "head"}``; the longest match wins) gets the new one instead.
    Everything else is returned as it is.
    """

    def walk(node):
        if isinstance(node, dict):
            if "backbone" in node:
                return _rename_model(node, renames)
            return {k: walk(v) for k, v in node.items()}
        return jax.tree.map(
            lambda x: walk(x) if isinstance(x, dict) else x,
            node,
            is_leaf=lambda x: isinstance(x, dict),
        )

    return walk(tree) if renames else tree


def inverse(renames: dict[str, str]) -> dict[str, str]:
    return {new: old for old, new in renames.items()}


class _NoOrbaxErrors(pylogging.Filter):
    """Drops ERROR records logged by orbax, and asyncio's reports of orbax's failed tasks."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        orbax = f"{os.sep}orbax{os.sep}"
        return not (
            record.levelno >= pylogging.ERROR
            and (orbax in record.pathname or record.name == "asyncio" and orbax in str(record.msg))
        )


def hide_background_errors() -> None:
    """Drops orbax's own ERROR log records (the tracebacks of its background save threads,
    hundreds of lines for a full disk): ``Checkpointer.save`` and ``wait`` raise every failed
    save as one CheckpointError naming its step. train.py calls it unless --traceback.

    Also drops the "RuntimeError: Event loop is closed" that tensorstore's writes still
    pending after a failed save report, through ``sys.unraisablehook``, when they call back
    into the event loop orbax has closed; every other unraisable error is still shown."""
    for name in ("absl", "asyncio"):  # orbax logs through absl
        logger = pylogging.getLogger(name)
        if not any(isinstance(f, _NoOrbaxErrors) for f in logger.filters):
            logger.addFilter(_NoOrbaxErrors())
    if not isinstance(sys.unraisablehook, _NoClosedLoopErrors):
        sys.unraisablehook = _NoClosedLoopErrors(sys.unraisablehook)


class _NoClosedLoopErrors:
    def __init__(self, shown):
        self.shown = shown

    def __call__(self, unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            self.shown(unraisable)


def _whole_arrays_in_one_process() -> None:
    """One process writes every array whole: orbax's replica-parallel saving (each replica
    writes a slice of a replicated array, which shares the work between hosts) compiles a
    slicing program per array shape and replica on the first save (1.6 s of a 12-s smoke
    run on 8 CPU devices) and gains nothing when one process writes it all. Replaces the
    jax.Array handler of orbax's registry with the same one without replica-parallel
    saving (its metadata store kept), once, in single-process runs only."""
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if jax.process_count() > 1 or type(handler) is not ocp.type_handlers.ArrayHandler:
        return
    if getattr(handler, "_use_replica_parallel", False):
        # orbax warns of every override ("Type handler registry type ... overriding"); this
        # one is meant, so its warning is left out of the run's output.
        absl_logger, quiet = pylogging.getLogger("absl"), _NoOverrideWarning()
        absl_logger.addFilter(quiet)
        try:
            ocp.type_handlers.register_type_handler(
                jax.Array,
                ocp.type_handlers.ArrayHandler(
                    use_replica_parallel=False,
                    array_metadata_store=getattr(handler, "_array_metadata_store", None),
                ),
                override=True,
            )
        finally:
            absl_logger.removeFilter(quiet)


class _NoOverrideWarning(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
        return not str(record.msg).startswith("Type handler registry")


class Checkpointer:
    """Wraps an orbax ``CheckpointManager`` rooted at ``workdir/checkpoints``.

    Opening one starts no background work: leftovers of killed saves and
    deletions are removed synchronously here, and the folder is created by the
    first save. Call ``close()`` (it waits for pending saves) before exit.
    """

    def __init__(
        self, workdir: str, *, keep: int = 3, save_every: int = 1000, async_save: bool = True
    ):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.deleted = os.path.join(self.directory, DELETED_SUBDIR)
        self.save_every = save_every
        self._remove_leftovers()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=1,  # the trainer decides when to save
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            # orbax's own clean-up runs in a background thread that close() does not
            # join (an early exit then printed its traceback); _remove_leftovers does it.
            cleanup_tmp_directories=False,
            todelete_subdir=DELETED_SUBDIR,  # delete = rename out of the step namespace first
            enable_async_checkpointing=async_save,
            create=False,  # created by the first save
        )
        _whole_arrays_in_one_process()
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending: int | None = None  # the step of the save in the background

    def _remove_leftovers(self) -> None:
        """Half-written steps of killed saves and steps a killed run was deleting."""
        if not _is_primary() or not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if TMP_MARKER in name:
                _remove_tree(os.path.join(self.directory, name))
        self._purge_deleted(remove_folder=True)

    def _purge_deleted(self, *, remove_folder: bool) -> None:
        """Removes the steps retention renamed into ``.deleted``.

        Only the entries are removed while a background save may still rename one
        there; the folder itself only when no save is pending (``remove_folder``).
        """
        if not _is_primary() or not os.path.isdir(self.deleted):
            return
        for name in sorted(os.listdir(self.deleted)):
            _remove_tree(os.path.join(self.deleted, name))
        if remove_folder:
            try:
                os.rmdir(self.deleted)
            except OSError:
                pass

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def failed(self, what: str, e: BaseException) -> CheckpointError:
        """The one-line error for a write of the run that failed (``what``: "Saving the
        checkpoint of step 3 in DIR"), naming the latest complete checkpoint, which a rerun
        resumes from. Call it once no save is pending (after ``wait``)."""
        latest = self.manager.latest_step()
        return CheckpointError(
            f"{what} failed ({_one_line(e)}); "
            f"the latest complete checkpoint is {'none yet' if latest is None else latest}. "
            "Check free disk space and permissions, then rerun the same command to resume."
        )

    def _failed(self, step, e: Exception) -> CheckpointError:
        return self.failed(f"Saving the checkpoint of step {step} in {self.directory}", e)

    def save(self, state, *, force: bool = False) -> bool:
        """Starts an (async) save of ``state`` at ``state.step``; a no-op if that step exists.

        The previous background save is finished first (orbax would wait for it anyway),
        so that its failure is reported as its own step's.
        """
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        self.wait()
        try:
            os.makedirs(self.directory, exist_ok=True)
            saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
        except Exception as e:
            raise self._failed(step, e) from e
        self._pending = step if saved else None
        self._purge_deleted(remove_folder=False)  # what retention moved out of the way
        return saved

    def wait(self) -> None:
        """Blocks until pending saves are complete; raises if one failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failed(self._pending, e) from e
        self._pending = None
        self._purge_deleted(remove_folder=True)

    def restore(self, abstract_state, step: int | None = None, *, renamed=None):
        """Restores ``step`` (default latest) into the structure/shardings of ``abstract_state``.

        Strict: a saved tree that differs from the current one (missing DINO
        centre, another model) raises instead of silently re-initialising; except
        that a checkpoint in the old names of ``renamed`` ({old path: new path},
        ``Method.renamed``) is read into the new ones.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No checkpoint found in {self.directory}.")
        target = jax.tree.map(
            lambda x: (
                jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                if hasattr(x, "sharding")
                else x
            ),
            abstract_state,
        )
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:
            if renamed:
                old = rename(target, inverse(renamed))
                try:
                    restored = self.manager.restore(step, args=ocp.args.StandardRestore(old))
                except Exception:
                    pass  # not the old names either: report the first error
                else:
                    logging.info("Read step %d through the renames %s", step, renamed)
                    return rename(restored, renamed)
            raise CheckpointError(
                f"Restoring step {step} from {self.directory} failed ({type(e).__name__}: "
                f"{_one_line(e)}). "
                "Was it written by a different model or method config?"
            ) from e

    def restore_or_init(self, state, *, renamed=None):
        """Returns the latest checkpoint restored into ``state``'s layout, or ``state`` itself."""
        if self.latest_step() is None:
            return state
        logging.info("Restoring checkpoint %d from %s", self.latest_step(), self.directory)
        return self.restore(state, renamed=renamed)

    def close(self) -> None:
        """Waits for pending saves (raising if one failed), then releases the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config as JSON (atomically; process 0 only) and returns its path."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not _is_primary():
        return path
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_saved_config(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
