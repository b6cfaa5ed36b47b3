from __future__ import annotations

import torch

from engine.models import Conditioning


def test_repeat_copies_each_row_in_place():
    cond = Conditioning({"e": torch.tensor([[1.0], [2.0]])}, {"e": torch.tensor([[0.0], [9.0]])})
    repeated = cond.repeat(2)
    assert repeated.batch_size == 4
    assert repeated.positive["e"].flatten().tolist() == [1, 1, 2, 2]
    assert repeated.negative is not None
    assert repeated.negative["e"].flatten().tolist() == [0, 0, 9, 9]
    assert repeated.rows([1, 2]).positive["e"].flatten().tolist() == [1, 2]


def test_no_negative_stays_none():
    assert Conditioning({"e": torch.zeros(1, 2)}).repeat(3).negative is None
