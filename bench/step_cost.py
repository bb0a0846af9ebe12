"""The cost of self-distillation in one training step, side by side in one process.

    python bench/step_cost.py [--model resnet18|smallcnn] [--batch 64] [--steps 20]

  plain         student forward + backward + optimiser step (what BO trains with)
  distil-naive  + a teacher forward that builds an autograd graph (teacher in train mode)
  distil        + the teacher forward as the SDK runs it: eval mode, under no_grad
  teacher-only  the shipped teacher forward alone
On a GPU the SDK also runs the CIFAR trainer in bf16 autocast and channels_last; this script
does the same there (`--device cuda`). Prints a table with ratios to the plain step and writes
bench/out/step_cost.png.

`--paths` adds what each way into BOSS costs per step, distilling (BOSS phase, a teacher), next
to the same loop without BOSS (docs/own-loop.md): the Trainer path (boss.loop), a script with
trial.distill, Lightning with BossCallback and boss.distill, Hugging Face with BossCallback. Each
step is timed from one step's end to the next (the framework's own work between steps included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from plotting import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sdk"))

from boss.losses import distillation_loss  # noqa: E402
from boss.trainers.cifar import cifar_resnet  # noqa: E402
from boss.trainers.digits import SmallCNN  # noqa: E402


def make(model: str, device: torch.device):
    if model == "resnet18":
        net, shape, classes = cifar_resnet(18, 100), (3, 32, 32), 100
    else:
        net, shape, classes = SmallCNN(16), (1, 8, 8), 10
    net = net.to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return net, shape, classes


def timed(fn, steps: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", choices=["resnet18", "smallcnn"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--paths", action="store_true", help="also time each way into BOSS (script, Lightning, HF)")
    p.add_argument("--cpu-time", action="store_true", help="--paths: time by this process's CPU time (a shared machine)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.paths:
        paths_table(args, device)
    torch.manual_seed(0)
    student, shape, classes = make(args.model, device)
    teacher, _, _ = make(args.model, device)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, *shape, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (args.batch,), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step(teacher_mode: str | None):
        def run():
            with amp:
                logits = student(x)
                loss = F.cross_entropy(logits.float(), y)
                if teacher_mode == "naive":
                    teacher.train()
                    t_logits = teacher(x)
                    loss = loss + distillation_loss(logits.float(), t_logits.float())
                elif teacher_mode == "shipped":
                    teacher.eval()
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = loss + distillation_loss(logits.float(), t_logits.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    def teacher_only():
        teacher.eval()
        with amp, torch.no_grad():
            teacher(x)

    student.train()
    variants = {"plain": step(None), "distil-naive": step("naive"), "distil": step("shipped"),
                "teacher-only": teacher_only}
    times = {}
    for fn in variants.values():
        timed(fn, args.warmup, device)
    for _ in range(2):  # interleave rounds so drift hits every variant alike
        for name, fn in variants.items():
            times.setdefault(name, []).extend(timed(fn, args.steps // 2, device))
    base = statistics.median(times["plain"])
    print(f"\nstep cost: {args.model}, batch {args.batch}, {device} "
          f"({torch.get_num_threads()} threads), median of {args.steps} steps\n")
    print("| variant | ms / step | ratio to plain | images / s |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m * 1000:.1f} | {m / base:.2f} | {args.batch / m:.0f} |")
    plot(times, base, args, device)
    return 0


def plot(times, base, args, device) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(times)
    ratios = [statistics.median(times[n]) / base for n in names]
    ax.bar(names, ratios, color=["#777", "#c55", "#4a4", "#48c"])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel("time / plain step")
    ax.set_title(f"{args.model}, batch {args.batch}, {device}")
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.2f}", ha="center", va="bottom")
    save(fig, f"step_cost_{args.model}_{device.type}.png")


# ---- the cost of each way into BOSS ------------------------------------------------------------------

class _Repeat:
    """The same batch `n` times: an iterable a framework takes as one loader (a list would be many)."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter([self.batch] * self.n)


def _steps(ts: list[float], skip: int) -> list[float]:
    return ts[skip:]


def paths_table(args, device: torch.device) -> None:
    """One table: ms per training step on each path, with and without BOSS, same model and batch."""
    import tempfile

    from boss import session as boss_session
    from boss.spec import Objective
    from boss.store import Store, to_uri
    from boss.trialspec import TrialSpec

    # --cpu-time: the CPU time this process spends (all its threads), which other processes on a
    # shared machine do not inflate as they do the wall clock
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.cpu_time:
        torch.set_num_threads(1)  # idle threads spin on a busy machine: CPU time then counts waiting
    tmp = Path(tempfile.mkdtemp(prefix="boss-step-cost-"))
    store = Store()
    uris = {}
    for role, seed in (("teacher", 1), ("student", 2)):
        torch.manual_seed(seed)
        net, shape, classes = make(args.model, torch.device("cpu"))
        for prefix in ("", "net."):
            uri = to_uri(tmp / f"{role}{prefix or '-'}.safetensors")
            uris[role, prefix] = uri, store.save_checkpoint(uri, {prefix + k: v for k, v in net.state_dict().items()}, {})
    steps, skip = args.steps + args.warmup, args.warmup
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, classes, (args.batch,))

    def spec(prefix: str, metric: str, **kw) -> TrialSpec:
        (t, ts), (st, ss) = uris["teacher", prefix], uris["student", prefix]
        return TrialSpec(study="bench", index=0, phase="boss", config={}, plugin="bench:Steps", epochs=1,
                         distill_weight=1.0, teacher_uri=t, teacher_sha256=ts, student_uri=st, student_sha256=ss,
                         output_uri=to_uri(tmp / f"out-{metric}-{prefix or '-'}"),
                         objective=Objective(metric=metric, goal="minimize"), **kw)

    def loop(with_boss: bool) -> list[float]:
        torch.manual_seed(0)
        trial = boss_session.Session(spec("", "val_loss")) if with_boss else None
        model = trial.model(lambda c: make(args.model, device)[0]) if trial else make(args.model, device)[0]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xd, yd, ts = x.to(device), y.to(device), []
        for _ in range(steps):
            t = clock()
            logits = model(xd)
            loss = F.cross_entropy(logits, yd) + (trial.distill(xd, logits) if trial else 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            ts.append(clock() - t)
        return _steps(ts, skip)

    def trainer_path() -> list[float]:
        """boss.loop itself (run_trial), each step timed between batches the loop asks for."""
        from boss.loop import run_trial
        from boss.trainer import Trainer

        ts: list[float] = []

        class Timed:
            def __len__(self):
                return steps

            def __iter__(self):
                last = None
                for _ in range(steps):
                    now = clock()
                    if last is not None:
                        ts.append(now - last)
                    last = now
                    yield x, y

        class Steps(Trainer):
            def configure_model(self):
                return make(args.model, torch.device("cpu"))[0]

            def train_dataloader(self):
                return Timed()

            def val_dataloader(self):
                return [(x, y)]

            def configure_optimizers(self, model, epochs, steps_per_epoch):
                return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        run_trial(spec("", "val_loss"), Steps({}, {}))
        return _steps(ts, skip)

    def lightning_path(with_boss: bool) -> list[float]:
        import lightning as L
        from boss.lightning import BossCallback

        ts: list[float] = []

        class Lit(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = make(args.model, torch.device("cpu"))[0]

            def forward(self, inputs):
                return self.net(inputs)

            def training_step(self, batch, i):
                logits = self(batch[0])
                loss = F.cross_entropy(logits, batch[1])
                if with_boss:
                    loss = loss + boss_session.distill(batch[0], logits)
                self.log("train_loss", loss, on_step=False, on_epoch=True)
                return loss

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

        class Clock(L.Callback):
            def on_train_batch_end(self, *a):
                ts.append(clock())

        boss_session._current = boss_session.Session(spec("net.", "train_loss")) if with_boss else None
        callbacks = [Clock()] + ([BossCallback()] if with_boss else [])
        trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0)
        trainer.fit(Lit(), _Repeat((x, y), steps))
        boss_session._current = None
        return _steps([b - a for a, b in zip(ts, ts[1:], strict=False)], skip)

    def hf_path(with_boss: bool) -> list[float]:
        import os

        from boss.hf import BossCallback
        from transformers import Trainer as HFTrainer
        from transformers import TrainerCallback, TrainingArguments
        from transformers.modeling_outputs import SequenceClassifierOutput

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        ts: list[float] = []

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = make(args.model, torch.device("cpu"))[0]

            def forward(self, inputs, labels=None):
                logits = self.net(inputs)
                loss = F.cross_entropy(logits, labels) if labels is not None else None
                return SequenceClassifierOutput(loss=loss, logits=logits)

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **kw):
                ts.append(clock())

        data = [{"inputs": x[i], "labels": y[i]} for i in range(len(y))] * steps
        boss_session._current = boss_session.Session(spec("net.", "eval_loss")) if with_boss else None
        targs = TrainingArguments(output_dir=str(tmp / "hf"), num_train_epochs=1, per_device_train_batch_size=args.batch,
                                  learning_rate=0.01, eval_strategy="epoch" if with_boss else "no",
                                  save_strategy="no", report_to="none", use_cpu=device.type != "cuda",
                                  disable_tqdm=True, logging_strategy="no")
        callbacks = [Clock()] + ([BossCallback()] if with_boss else [])
        trainer = HFTrainer(model=Wrapped(), args=targs, train_dataset=data, eval_dataset=data[:args.batch],
                            callbacks=callbacks)
        trainer.train()
        boss_session._current = None
        return _steps([b - a for a, b in zip(ts, ts[1:], strict=False)], skip)

    runs = {"script, no BOSS": lambda: loop(False), "script + trial.distill": lambda: loop(True),
            "Trainer (boss.loop)": trainer_path, "Lightning, no BOSS": lambda: lightning_path(False),
            "Lightning + BossCallback": lambda: lightning_path(True), "HF Trainer, no BOSS": lambda: hf_path(False),
            "HF Trainer + BossCallback": lambda: hf_path(True)}
    times: dict[str, list[float]] = {}
    for _ in range(2):  # two rounds, interleaved: drift on a shared machine hits every path alike
        for name, run in runs.items():
            times.setdefault(name, []).extend(run())
    rows = {name: statistics.median(ts) * 1000 for name, ts in times.items()}
    base = rows["script, no BOSS"]
    print(f"\nstep cost of each path: {args.model}, batch {args.batch}, {device} "
          f"({torch.get_num_threads()} threads), median of 2 x {args.steps} steps, teacher distilling, "
          f"{'CPU time of this process' if args.cpu_time else 'wall clock'}\n")
    print("| path | ms / step | ratio to a plain loop | ratio to the same path without BOSS |")
    print("|---|---|---|---|")
    plain = {"script + trial.distill": "script, no BOSS", "Trainer (boss.loop)": "script, no BOSS",
             "Lightning + BossCallback": "Lightning, no BOSS", "HF Trainer + BossCallback": "HF Trainer, no BOSS"}
    for name, ms in rows.items():
        own = f"{ms / rows[plain[name]]:.2f}" if name in plain else ""
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} | {own} |")


if __name__ == "__main__":
    sys.exit(main())
