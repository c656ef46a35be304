"""The driver: a task's steps jitted once, data-parallel over a mesh of devices.

Where there are several devices (a CPU host split into one device per core by
`lstm_jax.host.configure`, or several GPUs), `Trainer` runs the step data-parallel:
`shard_map` gives each device a slice of the batch, gradients and sums are added across
them, and every device applies the same update. On one device the steps are the plain
jitted `train_step` and `eval_step`.

Over several processes (`lstm_jax.host.start_distributed`) the mesh holds every process's
devices, ordered by process. Each process builds the same global batches (the tasks'
batches depend only on the seed and the epoch) and hands its devices only its own rows
(`jax.make_array_from_process_local_data`), so P processes see the batches, and reach
the parameters, of one process with the same devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lstm_jax.train import step as step_lib
from lstm_jax.train.step import TrainState
from lstm_jax.train.task import Task

DATA_AXIS = "data"  # the mesh axis the batch is split along


def data_mesh(batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh (axis `DATA_AXIS`) over the most of `devices` (default: every process's,
    ordered by process) that split `batch_size` rows evenly. Over several processes it
    must take them all: a batch they do not split evenly is an error."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    processes = {d.process_index for d in devices}
    if len(processes) > 1 and batch_size % len(devices):
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over the {len(devices)} devices "
            f"of {len(processes)} processes; choose a multiple of {len(devices)}"
        )
    size = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    return Mesh(np.array(devices[:size]), (DATA_AXIS,))


def compiler_options(devices: Iterable[jax.Device]) -> dict[str, Any] | None:
    """XLA options for the jitted steps: on CPU, LLVM's `-O1` instead of `-O2` for XLA's
    own kernels (`xla_backend_optimization_level=1`), which compiles faster and runs the
    loops' small fusions as fast (the matmuls are library calls either way;
    `benchmarks/HISTORY.md`); None elsewhere."""
    cpu = all(device.platform == "cpu" for device in devices)
    return {"xla_backend_optimization_level": 1} if cpu else None


class Trainer:
    """The optimizer and the jitted train and eval steps of one task.

    `place` puts a state (or parameters) where the steps expect it; batches may come as
    NumPy arrays. `step_fn` is the train step on the mesh before `jit` (for tools that
    jit it themselves, as the benchmark does, with `compiler_options`).
    """

    def __init__(
        self,
        task: Task,
        steps_per_epoch: int = 1,
        devices: Sequence[jax.Device] | None = None,
    ):
        config = task.config
        self.task = task
        self.optimizer = step_lib.make_optimizer(config, steps_per_epoch)
        self.mesh = data_mesh(config.batch_size, devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.split = NamedSharding(self.mesh, P(DATA_AXIS))
        self.parallel = self.mesh.size > 1
        self.multiprocess = len({d.process_index for d in self.mesh.devices.flat}) > 1
        axis = DATA_AXIS if self.parallel else None
        train = functools.partial(
            step_lib.train_step,
            metrics_fn=task.metrics,
            optimizer=self.optimizer,
            seed=config.seed,
            axis_name=axis,
            ema_decay=config.ema_decay,
        )
        evaluate = functools.partial(step_lib.eval_step, metrics_fn=task.metrics, axis_name=axis)
        self.step_fn = self._on_mesh(train)
        self.compiler_options = compiler_options(self.mesh.devices.flat)
        self.jitted_train_step = jax.jit(
            self.step_fn,
            in_shardings=(self.replicated, self.split),
            donate_argnums=0,
            compiler_options=self.compiler_options,
        )
        self.jitted_eval_step = jax.jit(
            self._on_mesh(evaluate),
            in_shardings=(self.replicated, self.split),
            compiler_options=self.compiler_options,
        )

    def train_step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        """One jitted step; on several devices it returns once the step has finished."""
        return self._settled(self.jitted_train_step(state, self.feed(batch)))

    def eval_step(self, params: Any, batch: Any) -> dict:
        return self._settled(self.jitted_eval_step(params, self.feed(batch)))

    def feed(self, batch: Any) -> Any:
        """The global `batch` as the steps take it: unchanged in one process; over several,
        arrays split along the mesh, built from this process's rows only."""
        if not self.multiprocess:
            return batch
        return jax.tree.map(self._rows_of_this_process, batch)

    def _rows_of_this_process(self, leaf: Any) -> jax.Array:
        leaf = np.asarray(leaf)
        local = leaf[self._local_rows(leaf.shape)]
        return jax.make_array_from_process_local_data(self.split, local, leaf.shape)

    @functools.cache  # noqa: B019 (one per trainer and batch shape: a handful)
    def _local_rows(self, shape: tuple[int, ...]) -> slice:
        """The rows of a `shape` batch that this process's devices hold."""
        rows = [index[0] for index in self.split.addressable_devices_indices_map(shape).values()]
        return slice(min(r.start for r in rows), max(r.stop for r in rows))

    def _settled(self, out: Any) -> Any:
        """Wait for a multi-device step before the next is dispatched.

        The step's gradient sum is a blocking rendezvous on XLA's CPU thread pool, which
        has one thread per core. With steps queued asynchronously, one device can run ahead
        and hold a pool thread at its rendezvous while the other device's work waits for a
        thread: the process then stalls until XLA aborts it. One step in flight costs only
        the host's overlap with the step.
        """
        return jax.block_until_ready(out) if self.parallel else out

    def _on_mesh(self, fn: Callable) -> Callable:
        """`fn(replicated, batch)` under `shard_map` when the mesh has several devices."""
        if not self.parallel:
            return fn
        return jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), P(DATA_AXIS)),
            out_specs=P(),
            check_vma=False,  # the recurrences start from carries that are not per-device
        )

    def place(self, tree: Any) -> Any:
        """`tree` (a state or parameters) copied to every device of the mesh (over several
        processes from host memory: every process holds the same values)."""
        if self.multiprocess:
            tree = jax.tree.map(self._on_host, tree)
        return jax.device_put(tree, self.replicated)

    def _on_host(self, leaf: Any) -> Any:
        placed = isinstance(leaf, jax.Array) and leaf.sharding == self.replicated
        return leaf if placed else np.asarray(leaf)

    def init_state(self) -> TrainState:
        """The state at step 0, from the config's seed, on the mesh. The parameters come
        from `task.init_params` jitted: the same values, and one compile costs less than
        running its ops one by one."""
        params = jax.jit(self.task.init_params)(jax.random.key(self.task.config.seed))
        state = step_lib.init_state(params, self.optimizer, ema=self.task.config.ema_decay > 0)
        return self.place(state)

    def evaluate(self, params: Any, batches: Iterable[Any]) -> dict[str, float]:
        """The task's metrics over `batches` (per-example means, and its derived ones)."""
        params = self.place(params)
        total = None
        for batch in batches:
            total = step_lib.add(total, self.eval_step(params, batch))
        return self.task.report(step_lib.means(total))
