"""Deterministic training on CUDA asks torch to refuse ops without a deterministic kernel; the
refusal must name the op and the way out. torch raises the same error for the CPU ops that lack
one (`Tensor.put_`), so the path is tested here with the real mechanism."""

import pytest
import torch

from sourcetrace.generators.base import GeneratorError
from sourcetrace.generators.training import determinism


def _nondeterministic_write():
    target = torch.zeros(4)
    target.put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))  # duplicate indices: which write wins is undefined


def test_strict_determinism_names_the_op_and_the_way_out_then_restores_torch():
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(GeneratorError) as info, determinism(True, strict=True):
        _nondeterministic_write()
    message = str(info.value)
    assert message.startswith("put_ has no deterministic implementation")
    assert "--nondeterministic" in message and "[training] deterministic = false" in message
    assert not torch.are_deterministic_algorithms_enabled()  # the process is left as it was


def test_lenient_modes_let_the_op_run_and_other_errors_pass_unchanged():
    with determinism(True, strict=False):  # CPU training: oneDNN off, no refusal
        _nondeterministic_write()
    with determinism(False, strict=True):  # --nondeterministic
        _nondeterministic_write()
    with pytest.raises(RuntimeError, match="shape"), determinism(True, strict=True):
        torch.zeros(2, 3) @ torch.zeros(2, 3)
