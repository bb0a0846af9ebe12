"""A Hugging Face Trainer fine-tuning run: a tiny BERT (built from a config, nothing downloaded)
classifies made-up token sequences. before/ is the plain run, ../train_hf.py the same as a BOSS
trial; docs/own-loop.md shows the diff."""

import boss
import numpy as np
import torch
from boss.hf import BossCallback, resume_from
from transformers import AutoModelForSequenceClassification, BertConfig, Trainer, TrainingArguments

config = {"lr": 3e-3, "weight_decay": 0.01, "batch_size": 32}
EPOCHS = 3
trial = boss.init(config, epochs=EPOCHS)
config, EPOCHS = trial.config, trial.max_epochs


class Sequences(torch.utils.data.Dataset):
    """Label 1 when token 3 occurs in the sequence: a task a tiny BERT learns in seconds."""

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


bert = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=16, num_labels=2)
model = AutoModelForSequenceClassification.from_config(bert)
args = TrainingArguments(output_dir="hf-out", num_train_epochs=EPOCHS, learning_rate=config["lr"],
                         weight_decay=config["weight_decay"], per_device_train_batch_size=int(config["batch_size"]),
                         eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True,
                         disable_tqdm=True, logging_strategy="no", seed=0)
trainer = Trainer(model=model, args=args, train_dataset=Sequences(512, 0), eval_dataset=Sequences(256, 1),
                  compute_metrics=accuracy, callbacks=[BossCallback()])
trainer.train(resume_from_checkpoint=resume_from())
