"""Everything that talks to Ray: connect (or start a local Ray), submit a runner task, reap, cancel.

Embedded default: with no address (neither the setting nor RAY_ADDRESS), a local Ray is started
in this process (`address="local"`: never attaches by accident to some other `ray start` cluster
on the machine) and shut down with it. It listens on loopback only (Ray's single-machine mode,
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set unless the environment says otherwise). With an address
(HOST:PORT of a cluster node's GCS, or ray://HOST:10001 for a Ray Client from outside the cluster)
this process joins that cluster as a driver, and the GPU nodes that joined it (`sernas worker`)
run the searches that reserve GPUs.

A search is one Ray task with `num_gpus` from its spec (Ray then sets CUDA_VISIBLE_DEVICES in the
task) and `max_retries=0`: re-running a search whose worker died is the lease's job, which knows
about checkpoints and cancel requests; Ray retrying it as well would run it twice. `max_calls=1`
gives every search a fresh worker process (clean CUDA state, memory returned when it ends).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.runner import RunnerConfig, SearchFn, execute

if TYPE_CHECKING:
    from nas.spec import SpecBase

log = logging.getLogger("sernas.workers")


class Outcome(enum.Enum):
    DONE = "done"  # the runner returned; it recorded the search's outcome itself
    CRASHED = "crashed"  # the worker process or its node died: the lease will re-queue the search
    CANCELLED = "cancelled"  # we cancelled the task (ray.cancel)
    ERROR = "error"  # the task raised before the runner could record anything


@dataclass(frozen=True)
class Reaped:
    outcome: Outcome
    value: Any = None  # the runner's return value, or the error message


@dataclass(frozen=True)
class NodeLimits:
    """The most of each resource that one alive node of the cluster has (or a node it may still add, see
    `with_node`), and what each node has free now. A task asking for more than any node has is never placed:
    Ray keeps it pending, silently, until a node that big joins; one asking for more than any node has free
    now waits in Ray's queue until a task ends or a node joins."""

    largest: dict[str, float]  # Ray resource ("CPU", "GPU", ...) -> the most of it on any one node
    free: tuple[dict[str, float], ...] | None = None  # each alive node's free resources now; None: unknown

    @classmethod
    def of(cls, nodes: list[dict[str, Any]], free: list[dict[str, float]] | None = None) -> NodeLimits | None:
        """From `ray.nodes()` and each node's free resources; None when no node is alive (nothing is known)."""
        alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
        if not alive:
            return None
        names = {name for resources in alive for name in resources}
        largest = {name: max(resources.get(name, 0.0) for resources in alive) for name in names}
        return cls(largest, None if free is None else tuple(free))

    def with_node(self, resources: dict[str, float]) -> NodeLimits:
        """These limits on a cluster that may still add a node with `resources` (an autoscaler's node type):
        a task that fits it is not refused; it waits, as nothing has it free until the node joins."""
        names = set(self.largest) | set(resources)
        largest = {name: max(self.largest.get(name, 0.0), resources.get(name, 0.0)) for name in names}
        return NodeLimits(largest, self.free)

    def fits_now(self, demand: dict[str, float], spare: dict[str, float] | None = None) -> bool:
        """Whether one node has `demand` (Ray resource -> amount) free now, with `spare` on top (resources being
        released that Ray may not count as free yet); True when that is not known."""
        if self.free is None:
            return True
        spare = spare or {}
        return any(_covers({n: node.get(n, 0.0) + spare.get(n, 0.0) for n in demand}, demand) for node in self.free)

    def taking(self, demand: dict[str, float]) -> NodeLimits:
        """The limits once a task with `demand` took it from the first node that has it free (Ray reports a
        placement only later: several searches placed in one poll must not all count on the same GPU)."""
        if self.free is None:
            return self
        nodes = list(self.free)
        for i, node in enumerate(nodes):
            if _covers(node, demand):
                nodes[i] = {name: have - demand.get(name, 0.0) for name, have in node.items()}
                break
        return NodeLimits(self.largest, tuple(nodes))

    def refusals(self, spec: SpecBase) -> list[tuple[str, str]]:
        """(spec field, what is wrong and what to do) for each resource that one task of `spec` asks of a node
        beyond what every node has, its memory included (when the nodes' memory is known)."""
        found = []
        for resource, (field, amount) in spec.node_demands().items():
            have = self.largest.get(resource, 0.0)
            if amount > have:
                asked = f"{field}: {amount:g} asked, but the cluster's nodes have at most {have:g} {resource}s"
                found.append((field, f"{asked}: {_fix(field, resource, have)}"))
        memory = None if "memory" not in self.largest else spec.memory_refusal(self.largest["memory"])
        return found if memory is None else [*found, memory]


def _covers(node: dict[str, float], demand: dict[str, float]) -> bool:
    return all(node.get(name, 0.0) >= amount for name, amount in demand.items() if amount > 0)


def _fix(field: str, resource: str, have: float) -> str:
    if resource == "GPU" and have == 0:
        return "set gpus to 0 (and device to 'auto' or 'cpu'), or join a GPU node to the cluster (sernas worker)"
    return f"lower {field} to {have:g} or less, or join a node with more {resource}s to the cluster"


class _ThreadRayLogFilter(logging.Filter):
    """ray.init from a non-main thread warns that it cannot install its SIGTERM handler. Good: the
    web server owns the signals of the service process; the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


class RayBackend:
    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus  # only for the embedded Ray: CPUs it may use (default: all)
        self._started = False
        self._remote: Any = None
        self._limits_unknown_logged = False

    @property
    def embedded(self) -> bool:
        return self.address is None

    def connect(self) -> None:
        if self.embedded and "ray._private.ray_constants" not in sys.modules:
            # Read once, when Ray is first imported: a local Ray then binds 127.0.0.1 instead of
            # the machine's network address (nothing outside this machine needs to reach it).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        if ray.is_initialized():  # ray.init only once per process: reuse the connection
            self._started = False
        else:
            filt = _ThreadRayLogFilter()
            logging.getLogger("ray._private.worker").addFilter(filt)
            try:
                if self.embedded:
                    ray.init(
                        address="local",
                        num_cpus=self.num_cpus,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                    )
                else:  # a cluster node's GCS (host:port) or a Ray Client (ray://host:10001)
                    ray.init(address=self.address, logging_level=logging.WARNING)
            finally:
                logging.getLogger("ray._private.worker").removeFilter(filt)
            self._started = True
            where = "a local Ray" if self.embedded else f"the Ray cluster at {self.address}"
            log.info("connected to %s: %s", where, _resources(ray.cluster_resources()))
        self._remote = ray.remote(max_retries=0, max_calls=1)(execute)

    def shutdown(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def cpus_per_search(self, gpus: float, max_running: int) -> float:
        """CPUs to reserve for a search: a share of one node, so the task always fits somewhere.

        A GPU search reserves one CPU (the GPU does the work). A CPU search gets the cluster's CPUs
        divided among `max_running` searches, capped at the largest node's CPUs.
        """
        import ray

        if gpus > 0:
            return 1
        try:
            nodes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
            largest = max(nodes, default=1) or 1
            total = ray.cluster_resources().get("CPU", largest)
        except Exception as exc:  # e.g. an API a Ray Client cannot reach: one CPU always fits
            log.warning("cannot read the cluster's CPUs (%s); reserving 1 CPU per search", exc)
            return 1
        return max(1, min(largest, math.floor(total / max_running)))

    def node_limits(self) -> NodeLimits | None:
        """The largest node of the cluster and what each node has free (see NodeLimits), or None when Ray
        cannot tell."""
        import ray

        try:
            return NodeLimits.of(ray.nodes(), _free_per_node())
        except Exception as exc:  # e.g. an API a Ray Client cannot reach: searches are then placed unchecked
            if not self._limits_unknown_logged:
                log.warning("cannot read the cluster's nodes (%s); searches are submitted unchecked", exc)
                self._limits_unknown_logged = True
            return None

    def submit(self, search_id: str, config: RunnerConfig, gpus: float, cpus: float, search_fn: SearchFn | None) -> Any:
        return self._remote.options(num_gpus=gpus, num_cpus=cpus, name=f"search-{search_id}").remote(
            search_id, config, search_fn
        )

    def finished(self, refs: list[Any]) -> list[Any]:
        import ray

        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return ready

    def reap(self, ref: Any) -> Reaped:
        import ray
        from ray import exceptions as rex

        try:
            return Reaped(Outcome.DONE, ray.get(ref, timeout=0))
        except rex.TaskCancelledError:
            return Reaped(Outcome.CANCELLED)
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.OwnerDiedError) as exc:
            return Reaped(Outcome.CRASHED, _first_line(exc))
        except rex.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            return Reaped(Outcome.ERROR, f"{type(cause).__name__}: {cause}")
        except Exception as exc:  # runtime-env setup failed and the like: the search cannot start
            return Reaped(Outcome.ERROR, f"{type(exc).__name__}: {_first_line(exc)}")

    def cancel(self, ref: Any) -> None:
        import ray

        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # already finished, or its worker is gone
            log.debug("ray.cancel: %s", exc)


def _free_per_node() -> list[dict[str, float]] | None:
    """Each alive node's free resources; None when this Ray cannot say (Ray has no public call for it per node,
    only its state module's)."""
    try:
        from ray._private.state import available_resources_per_node

        return list(available_resources_per_node().values())
    except Exception as exc:
        log.debug("cannot read the nodes' free resources: %s", exc)
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _resources(resources: dict[str, float]) -> str:
    keep = ("CPU", "GPU", "memory")
    return ", ".join(
        f"{k} {resources[k] / 2**30:.1f} GiB" if k == "memory" else f"{k} {resources[k]:g}"
        for k in keep
        if k in resources
    )
