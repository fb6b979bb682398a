"""``keep_freed_memory``: set on glibc, and the training numbers do not depend on it."""

from __future__ import annotations

import platform
import sys

import torch

from cadasg_dist.train.step import keep_freed_memory


def test_malloc_options_are_set_where_glibc_runs() -> None:
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
    assert keep_freed_memory() is expected  # idempotent: a second runner in the process sets them again


def test_the_options_change_no_number() -> None:
    """The same computation before and after: allocation is all they touch."""
    torch.manual_seed(0)
    x = torch.randn(3000, 257)
    layer = torch.nn.Linear(257, 300)
    before = torch.autograd.grad(layer(x).square().sum(), layer.weight)[0]
    keep_freed_memory()
    after = torch.autograd.grad(layer(x).square().sum(), layer.weight)[0]
    assert torch.equal(before, after)
