"""RecBole's distributed mode (``nproc``, ``world_size``, ``ip``, ``port``, ``offset``) on CPUs and GPUs.

RecBole 1.2.1 starts every process group with NCCL and pins each process to a GPU, so its
distributed mode fails on a CPU. Here the backend follows the device: NCCL where the process has a
GPU, gloo on CPUs. ``spawn`` starts the processes of this machine (``torch.multiprocessing``) and
takes rank 0's result; if one process fails, the others are stopped and the error is raised in the
caller with the failing process's message. The cross-domain protocol gathers every process's ranks
before computing metrics (recbole_tema/evaluation/trainer.py), so metrics cover all users.
"""

import datetime
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_tema.errors import ConfigurationError

DEFAULT_TIMEOUT_S = 1800  # a collective waits this long for a process that died before giving up


def is_distributed(config):
    return not config["single_spec"]


def check_port_free(ip, port):
    """Rank 0 listens on (ip, port): a taken port is a clear error before any process starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, int(port)))
        except OSError as error:
            raise ConfigurationError(
                f"Port {port} on {ip} is not free ({error.strerror}): another run may be using it; pass "
                "--port=<a free port> (every process of the run must use the same one)."
            ) from None


def init_process(config):
    """Join the process group of a distributed run and set ``config``'s device (one process, one device)."""
    rank = config["local_rank"] + config["offset"]
    use_gpu = torch.cuda.is_available() and len(config["gpu_id"]) > 0
    backend = "nccl" if use_gpu else "gloo"
    timeout = datetime.timedelta(seconds=config["dist_timeout_s"] or DEFAULT_TIMEOUT_S)
    dist.init_process_group(backend=backend, rank=rank, world_size=config["world_size"],
                            init_method=f"tcp://{config['ip']}:{config['port']}", timeout=timeout)
    if use_gpu:
        torch.cuda.set_device(config["local_rank"])
        config["device"] = torch.device("cuda", config["local_rank"])
    else:
        config["device"] = torch.device("cpu")
    config["dist_backend"] = backend
    config["single_spec"] = False
    if config["local_rank"] != 0:  # one process logs and shows progress
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


def gather(values):
    """Every process's ``values`` (any picklable object), in rank order, on every process."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, values)
    return gathered


def broadcast(value):
    """Rank 0's ``value`` on every process."""
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _worker(local_rank, target, kwargs, settings, queue):
    kwargs = dict(kwargs)
    kwargs["config_dict"] = {**(kwargs.get("config_dict") or {}), **settings, "local_rank": local_rank}
    try:
        result = target(**kwargs)
    except ConfigurationError as error:
        print(f"run_recbole: error in process {local_rank}: {error}", file=sys.stderr)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if local_rank == 0:
        queue.put(result)


def spawn(target, kwargs, nproc, world_size=-1, ip="localhost", port=5678, offset=0):
    """Run ``target(**kwargs)`` in ``nproc`` processes of this machine; rank 0's result.

    ``world_size`` (default ``nproc``) counts the processes of every machine; ``offset`` is the rank of
    this machine's first process (0 on the machine that hosts rank 0 at ``ip:port``).
    """
    world_size = nproc if world_size in (None, -1) else world_size
    if nproc < 1 or world_size < nproc or offset + nproc > world_size:
        raise ConfigurationError(f"nproc={nproc}, world_size={world_size}, offset={offset}: each machine runs nproc "
                                 "processes, offset + nproc <= world_size.")
    if offset == 0:
        check_port_free(ip, port)
    settings = {"nproc": nproc, "world_size": world_size, "ip": ip, "port": str(port), "offset": offset}
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_worker, args=(target, kwargs, settings, queue), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as error:  # the others have been stopped
        last = str(error).strip().splitlines()[-1]
        raise ConfigurationError(f"a process of the distributed run failed: {last}") from None
    except mp.ProcessExitedException as error:
        raise ConfigurationError(f"a process of the distributed run died ({error}); the others were stopped.") from None
    return None if queue.empty() else queue.get()
