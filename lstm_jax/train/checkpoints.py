"""Orbax checkpoints of a run: the training state every epoch, the best parameters apart.

    workdir/checkpoints/<step>   {"state": TrainState, "sums": the epoch's running sums}
    workdir/best/<step>          the parameters with the best validation metric so far

Saving is synchronous, so a checkpoint is whole on disk when `save` returns (the loop
saves on SIGINT/SIGTERM and then exits). Restoring takes a template of the tree (arrays or
`jax.ShapeDtypeStruct`s), so every leaf comes back with its saved shape and dtype, placed
as the template's leaf is, or on this process's first device where the template does not
say: a run saved from a two-device mesh loads in a one-device process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

STATE_DIR = "checkpoints"
BEST_DIR = "best"


def manager(path: str | Path, max_to_keep: int, *, owner: bool = False) -> ocp.CheckpointManager:
    """A synchronous `CheckpointManager` over `path` keeping the newest `max_to_keep`.

    `owner`: this process trains into `path`, so it removes the folders of saves that
    never finished (a process killed while saving); a reader leaves them alone, as they
    may be a running save's."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=owner,
    )
    return ocp.CheckpointManager(
        Path(path).absolute(), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def state_manager(workdir: str | Path, *, owner: bool = False) -> ocp.CheckpointManager:
    return manager(Path(workdir) / STATE_DIR, max_to_keep=2, owner=owner)


def best_manager(workdir: str | Path, *, owner: bool = False) -> ocp.CheckpointManager:
    return manager(Path(workdir) / BEST_DIR, max_to_keep=1, owner=owner)


def save(checkpoints: ocp.CheckpointManager, step: int, tree: Any) -> None:
    checkpoints.save(step, args=ocp.args.StandardSave(tree))


def restore_state(checkpoints: ocp.CheckpointManager, state: Any) -> tuple[Any, Any]:
    """The latest `(state, sums)` saved by the loop, `state` shaped like the template
    given and the sums as saved (their names are the task's)."""
    step = checkpoints.latest_step()
    saved = checkpoints.item_metadata(step).tree["sums"]
    placed = getattr(jax.tree.leaves(state)[0], "sharding", None)  # the sums go with the state
    sums = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=placed), saved)
    tree = restore(checkpoints, {"state": state, "sums": sums}, step)
    return tree["state"], tree["sums"]


def restore(checkpoints: ocp.CheckpointManager, template: Any, step: int | None = None) -> Any:
    """The checkpoint at `step` (default: the latest) as a tree shaped like `template`."""
    step = checkpoints.latest_step() if step is None else step
    abstract = jax.tree.map(_placed, template)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(abstract))


def _placed(leaf: Any) -> jax.ShapeDtypeStruct:
    """`leaf`'s shape and dtype, with its sharding, or the first local device's."""
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is not None:
        return struct
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=device)
