"""The cost of self-distillation in one training step, side by side in one process.

    python bench/step_cost.py [--model resnet18|smallcnn] [--batch 64] [--steps 20]

  plain         student forward + backward + optimiser step (what BO trains with)
  distil-naive  + a teacher forward that builds an autograd graph (teacher in train mode)
  distil        + the teacher forward as the SDK runs it: eval mode, under no_grad
  teacher-only  the shipped teacher forward alone
On a GPU the SDK also runs the CIFAR trainer in bf16 autocast and channels_last; this script
does the same there (`--device cuda`). Prints a table with ratios to the plain step and writes
bench/out/step_cost.png.
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
    args = p.parse_args()
    device = torch.device(args.device)
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


if __name__ == "__main__":
    sys.exit(main())
