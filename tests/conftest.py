"""Shared pytest setup: seeding, and the gpu / circuit_tracer markers."""

import importlib.util
import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # Tiny models: one intra-op thread is much faster (no OpenMP sync), and deterministic.
    # The engine's parallel workers are still exercised explicitly (n_workers=2).
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    no_cuda = pytest.mark.skip(reason="needs CUDA")
    no_ct = pytest.mark.skip(reason="needs circuit_tracer importable")
    has_ct = importlib.util.find_spec("circuit_tracer") is not None
    # MW_GPU_TEST_DEVICE=cpu runs the gpu tests' code on the CPU (tests/tracer/test_cuda.py: a dry run)
    gpu_dry_run = os.environ.get("MW_GPU_TEST_DEVICE") == "cpu"
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available() and not gpu_dry_run:
            item.add_marker(no_cuda)
        if "circuit_tracer" in item.keywords and not has_ct:
            item.add_marker(no_ct)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
