"""Train FC3 (784-1000-1000-10) on digits or MNIST and save a state dict for ``--weights``.

Examples::

    python scripts/train_fc3.py --data digits --out fc3-digits.pth
    python scripts/train_fc3.py --data mnist --root ~/data/mnist --epochs 10 --out fc3-mnist.pth

The file loads with ``FC3().load_state_dict(torch.load(path, weights_only=True))``. A JSON
sidecar next to it records the validation error and the settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from compressbo.compression.data import load_train, load_validation
from compressbo.exceptions import UserInputError
from compressbo.compression.evaluator import resolve_device
from compressbo.compression.training import DEFAULT_EPOCHS, train_fc3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits", help="training data (default: digits)")
    parser.add_argument("--root", type=Path, help="MNIST directory (IDX files, or torchvision's MNIST/raw layout)")
    parser.add_argument("--download", action="store_true", help="download MNIST into --root if missing")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of init, shuffling and the digits split")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--out", type=Path, required=True, help="output state dict (.pth)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        train = load_train(args.data, args.root, download=args.download, seed=args.seed)
        val = load_validation(args.data, args.root, seed=args.seed)
        started = time.perf_counter()
        state, val_error = train_fc3(
            train, val, epochs=args.epochs, seed=args.seed, device=device, batch_size=args.batch_size, lr=args.lr
        )
        seconds = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, args.out)
    except UserInputError as exc:
        print(f"train_fc3: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"train_fc3: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    record = {
        "data": args.data,
        "epochs": args.epochs,
        "seed": args.seed,
        "val_error": val_error,
        "val_size": len(val),
        "train_seconds": round(seconds, 3),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"FC3 on {args.data}: validation error {val_error:.4f} ({len(val)} images), {seconds:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
