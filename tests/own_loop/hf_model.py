"""The tiny BERT and the made-up data of examples/own-loop/train_hf.py, for the tests."""

import numpy as np
import torch
from transformers import BertConfig


def bert_config(dropout: float = 0.1) -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=16, num_labels=2, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


class Sequences(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.ids = torch.from_numpy(rng.integers(5, 40, (n, 16)))
        self.ids[torch.from_numpy(rng.random((n, 16)) < 0.04)] = 3
        self.labels = (self.ids == 3).any(1).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": self.labels[i]}


def accuracy(p):
    return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}
