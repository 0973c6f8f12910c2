"""Sequence-parallel video sampling on torch.distributed (gloo on CPU, NCCL on GPUs; torchrun starts
the processes):

    dist.init_process_group("nccl")            # under torchrun
    report = fastvid.distributed.parallelize(model)       # in place, like fastvid.patch
    video = fastvid.models.sample("vdm", model, size)     # same call, same full result, on every rank
"""
from .comm import CommLog, FastvidDistributedError, shard_sizes
from .parallelize import STRATEGIES, ParallelReport, parallel_state, parallelize, unparallelize

__all__ = ["STRATEGIES", "CommLog", "FastvidDistributedError", "ParallelReport", "parallel_state", "parallelize",
           "shard_sizes", "unparallelize"]
