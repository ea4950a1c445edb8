"""What people look at during and after training: metrics.jsonl, loss.png, optional TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gentext import checkpoint
from gentext.errors import GentextError

PLOT = checkpoint.PLOT


def plot_losses(run_dir: Path) -> None:
    """Draw train and validation loss against tokens seen into `loss.png` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    records = checkpoint.read_metrics(run_dir)
    train = [(r["tokens"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1, alpha=0.7)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=2)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    checkpoint.atomic_write(Path(run_dir) / PLOT, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def tensorboard_writer():
    """TensorBoard's SummaryWriter class, or a one-line error naming the package (checked before a
    run writes anything, so a missing package leaves no half-made run folder)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GentextError("--tensorboard needs the tensorboard package: pip install 'gentext[tensorboard]'") from None
    return SummaryWriter


class Recorder:
    """Appends metrics, keeps the plot current, mirrors scalars to TensorBoard when asked."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, plot: bool = True):
        self.run_dir = Path(run_dir)
        self.plot = plot
        self.writer = None
        if tensorboard:
            self.writer = tensorboard_writer()(log_dir=str(self.run_dir / checkpoint.TENSORBOARD))

    def log(self, record: dict[str, Any]) -> None:
        checkpoint.append_metrics(self.run_dir, record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "tokens") and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record.get("step", 0))

    def evaluation(self, record: dict[str, Any]) -> None:
        self.log(record)
        if self.plot:
            plot_losses(self.run_dir)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint a resumed run restarts from)."""
    import json

    records = [r for r in checkpoint.read_metrics(run_dir) if r.get("step", 0) <= step]
    text = "".join(json.dumps(r) + "\n" for r in records)
    checkpoint.atomic_write(Path(run_dir) / checkpoint.METRICS, lambda tmp: tmp.write_text(text))
