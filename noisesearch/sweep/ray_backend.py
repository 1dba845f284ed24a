"""Ray backend for sweeps: one actor per GPU (or per CPU slot) that loads the model and verifiers once.

The driver process keeps the only writer: actors take (configuration, seed, chunk of targets)
tasks and return rows and images, which ``run_sweep`` appends to the same JSONL as a local run,
in whatever order they finish. An actor that dies is restarted and its unfinished tasks are
retried (``max_restarts``/``max_task_retries``); since rows are written only when a task's result
arrives here, a retried task can neither lose nor duplicate a row.
"""

from __future__ import annotations

from noisesearch.errors import UserError


class _Worker:
    """Holds one loaded world; runs chunks of a sweep."""

    def __init__(self, config: dict, items: list, cache=None):
        import torch

        from noisesearch.sweep.chunk import load_world
        from noisesearch.sweep.config import SweepConfig

        torch.set_num_threads(1)  # one actor per CPU slot
        self.config = SweepConfig.model_validate(config)
        self.items = items
        self.world = load_world(self.config)
        self.cache = cache  # a CandidateCache (its settings; every actor writes the shared folder)

    def run(self, task):
        from noisesearch.sweep.chunk import run_chunk

        cell, chunk = task
        return run_chunk(self.config, self.world, self.items, cell, chunk, cache=self.cache)


class RayExecutor:
    """Maps sweep tasks over Ray actors (``address``: an existing cluster; default: a local Ray).

    Args:
        address: Ray cluster address, or None to start a local Ray with ``num_cpus`` CPUs.
        workers: number of actors (default: one per GPU if the cluster has GPUs, else one per CPU).
    """

    def __init__(self, *, address: str | None = None, workers: int | None = None, num_cpus: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'noisesearch[ray]'") from None
        if address is not None:
            check_address(address)
        self.address, self.workers, self.num_cpus = address, workers, num_cpus
        self.actors: list = []

    def map(self, config, items, tasks, cache=None):
        """Yield (cell, rows, images) for every task, in completion order (``cache``: the replay cache)."""
        import ray
        from ray.util import ActorPool

        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
                except ConnectionError as e:
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise UserError(f"cannot connect to the Ray cluster at {self.address}: {reason}") from None
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        workers = self.workers or (gpus or max(int(resources.get("CPU", 1)), 1))
        remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_restarts=-1, max_task_retries=-1)(
            _Worker
        )
        self.actors = [remote.remote(config.canonical(), items, cache) for _ in range(workers)]
        pool = ActorPool(self.actors)
        yield from pool.map_unordered(lambda actor, task: actor.run.remote(task), tasks)


def check_address(address: str, *, timeout: float = 10.0) -> None:
    """Refuse a Ray address with nothing listening, in at most ``timeout`` seconds (``ray.init`` may wait forever).

    ``HOST:PORT`` and ``ray://HOST:PORT`` are tried with a TCP connection; ``auto`` and ``local`` are
    left to Ray.
    """
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(
            f"no Ray cluster answers at {address} ({reason}); start one with `ray start --head` "
            "or leave out --address for a local Ray"
        ) from None
