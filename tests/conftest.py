from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    # Small tensors: one thread is faster and keeps results identical across machines.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
