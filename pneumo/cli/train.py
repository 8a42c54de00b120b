"""``python -m pneumo train PACK --run-dir DIR``: train a model into a run folder.

Options given on the command line override ``--preset NAME`` or ``--config``, which
override the defaults (the blog's: VGG16 encoder, Adam 2e-5, 90 epochs of batch 32, one
pass over train and dev per epoch). Presets: quick-demo (a small U-Net from scratch, about
2 minutes on 2 CPU cores at 128 px) and blog. ``--resume`` alone continues the run in
``--run-dir`` from its own ``config.json``. ``--init-from RUN`` starts from another run's
best.keras weights (same variant, width and image size). One writer per run folder: while a
trainer (or the app) writes ``--run-dir``, a second one stops at once, naming the first.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from pneumo.config import (IN_MEMORY, IN_MEMORY_LABELS, LOSS_LABELS, LR_SCHEDULE_LABELS, PRECISION_LABELS, PRECISIONS,
                           PRESETS, VARIANT_LABELS)
from pneumo.store.run import CONFIG, EXCLUSION_RECORD

# (dest in TrainConfig, flag) for the options that map one to one.
_TRAIN_OPTIONS = ("variant", "epochs", "steps_per_epoch", "validation_steps", "batch_size", "lr", "loss",
                  "fine_tune_epochs", "fine_tune_lr", "mixed_precision", "xla", "seed", "freeze_encoder",
                  "width", "lr_schedule", "init_from", "in_memory")
_AUGMENT_OPTIONS = ("rotation", "width_shift", "height_shift", "zoom", "horizontal_flip", "fill_mode",
                    "per_batch")


def _choices(labels: dict[str, str]) -> str:
    """``name = label; ...`` for --help, from the library's labels (pneumo.config); a label that
    only repeats its name is left out."""
    return "; ".join(name if label == name else f"{name} = {label}" for name, label in labels.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a segmentation model on a pack (run folder with checkpoints and curves)",
        description="Train a segmentation model into a run folder.\n\n" + __doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pack", nargs="?", help="HDF5 pack (optional when --config or --resume gives it)")
    p.add_argument("--run-dir", help="run folder (default: a new timestamped folder in the runs directory)")
    p.add_argument("--config", metavar="JSON", help=f"a {CONFIG} to start from (e.g. another run's)")
    p.add_argument("--preset", metavar="NAME",
                   help=f"named settings to start from: {', '.join(PRESETS)} (not with --config)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last finished epoch")
    p.add_argument("--allow-changed-pack", action="store_true",
                   help="resume even though the pack changed since the run started on it")
    p.add_argument("--exclude", metavar="LIST.csv",
                   help="leave the images whose ids this CSV lists (an 'id' column, e.g. the relabel list "
                        "of pneumo curate) out of the train and dev splits; never out of test, so test "
                        f"scores stay comparable with runs on the whole pack. Recorded in {CONFIG} and "
                        f"RUN/{EXCLUSION_RECORD}; a resumed run refuses a list whose ids changed (none: no list)")
    g = p.add_argument_group("model and optimisation (default: the blog's settings)")
    g.add_argument("--variant", metavar="NAME", help=f"the model (default unet): {_choices(VARIANT_LABELS)}")
    g.add_argument("--encoder-weights", metavar="W",
                   help="imagenet (default; downloaded once into ~/.keras/models), none, or a .h5 path")
    g.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="freeze the VGG16 encoder (default: frozen when its weights are pretrained)")
    g.add_argument("--epochs", type=int, help="epochs of the first stage (default 90)")
    g.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass over train)")
    g.add_argument("--validation-steps", type=int,
                   help="dev batches per epoch (default and maximum: one pass over dev)")
    g.add_argument("--batch-size", type=int, help="images per batch (default 32)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 2e-5)")
    g.add_argument("--loss", metavar="NAME", help=f"the loss (default bce): {_choices(LOSS_LABELS)}")
    g.add_argument("--fine-tune-epochs", type=int,
                   help="second stage: epochs with the encoder unfrozen (default 0 = none)")
    g.add_argument("--fine-tune-lr", type=float, help="Adam learning rate of the second stage (default 1e-5)")
    g.add_argument("--mixed-precision", nargs="?", const="fp16", choices=PRECISIONS, metavar="P",
                   help=f"compute precision (default none; the bare flag means fp16, as before): "
                        f"{_choices(PRECISION_LABELS)}")
    g.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_const", const="none",
                   help=argparse.SUPPRESS)  # the older spelling of --mixed-precision none
    g.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="jit-compile the train step with XLA")
    g.add_argument("--seed", type=int, help="weights, shuffling and augmentation seed (default 0)")
    g.add_argument("--width", type=float,
                   help="filter multiplier of variant unet-bn (0.25: 16 filters in block 1; default 1)")
    g.add_argument("--positive-fraction", metavar="F",
                   help="share of images with a lesion in every train batch, 0..1, or none (default: uniform)")
    g.add_argument("--lr-schedule", metavar="NAME",
                   help=f"the learning-rate schedule (default constant): {_choices(LR_SCHEDULE_LABELS)}")
    g.add_argument("--init-from", metavar="RUN",
                   help="start from this run folder's best.keras weights (same variant, width and size)")
    g.add_argument("--in-memory", choices=IN_MEMORY, metavar="MODE",
                   help=f"hold each split's images in memory or stream them from the pack (default auto): "
                        f"{_choices(IN_MEMORY_LABELS)}")
    a = p.add_argument_group("augmentation (default: the blog's ranges)")
    a.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    a.add_argument("--rotation", type=float, help="degrees (default 10)")
    a.add_argument("--width-shift", type=float, help="fraction of the width (default 0.02)")
    a.add_argument("--height-shift", type=float, help="fraction of the height (default 0.02)")
    a.add_argument("--zoom", type=float, help="zoom range (default 0.02)")
    a.add_argument("--horizontal-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random left-right flips (default on)")
    a.add_argument("--fill-mode", help="nearest (default), constant, reflect or wrap")
    a.add_argument("--per-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="one transform per batch, as the blog's generator (default: per image)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig the arguments describe, or None for a bare ``--resume`` (the run's own)."""
    from pneumo.config import AugmentConfig, TrainConfig, from_dict, preset, to_dict
    from pneumo.store.config_file import load_config
    from pneumo.errors import InputError
    from pneumo.store.run import RunFolder

    overrides = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.pack is not None:
        overrides["pack"] = args.pack
    if args.positive_fraction is not None:
        text = args.positive_fraction.strip().lower()
        try:
            overrides["positive_fraction"] = None if text in ("none", "") else float(text)
        except ValueError:
            raise InputError(f"--positive-fraction {args.positive_fraction!r}: expected a number in 0..1 "
                             f"or none") from None
    if args.exclude is not None:
        overrides["exclude"] = None if args.exclude.strip().lower() in ("none", "") else args.exclude
    if args.encoder_weights is not None:
        w = args.encoder_weights
        overrides["encoder_weights"] = None if w.strip().lower() in ("none", "") else w
    augment = {k: getattr(args, k) for k in _AUGMENT_OPTIONS if getattr(args, k) is not None}
    if args.no_augment:
        if augment:
            raise InputError("--no-augment cannot be combined with augmentation ranges")
        augment = {"rotation": 0.0, "width_shift": 0.0, "height_shift": 0.0, "zoom": 0.0,
                   "horizontal_flip": False}

    if args.config and args.preset:
        raise InputError("--preset and --config are alternatives: give one (options override either)")
    if args.preset:
        base = to_dict(preset(args.preset))
    elif args.config:
        base = to_dict(load_config(TrainConfig, args.config))
    elif args.resume and args.run_dir and RunFolder(args.run_dir).config.is_file():
        if not overrides and not augment:
            return None
        base = to_dict(load_config(TrainConfig, RunFolder(args.run_dir).config))
    else:
        base = to_dict(TrainConfig())
    base.update(overrides)
    base["augment"] = {**base.get("augment", to_dict(AugmentConfig())), **augment}
    config = from_dict(TrainConfig, base, where="options")
    if not config.pack and not args.resume:
        raise InputError("no pack given: pass PACK or a --config that names one")
    return config


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import InputError, PneumoError

    from pneumo.store import run as runs
    from pneumo.store.run_list import new_run_dir
    from pneumo.train.cluster import multi_worker

    from pneumo import settings

    config = config_from_args(args)
    if args.resume and not args.run_dir:
        raise InputError("--resume needs --run-dir (the run folder to continue)")
    if args.run_dir:  # before TensorFlow loads: a folder nothing can be written in is the whole answer
        settings.check_writable(args.run_dir, "the run writes its checkpoints and history there")
    else:
        settings.check_workspace(write=("runs",))
    if args.run_dir and not multi_worker():
        # A folder another trainer writes: refused now, not after TensorFlow loaded. (A worker of a
        # TF_CONFIG or Slurm cluster is left to train(), where only the chief takes the folder.)
        runs.writer_lock(args.run_dir, handover_from=runs.handover_pid()).check()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    import keras

    from pneumo.config import TrainConfig
    from pneumo.store.config_file import load_config
    from pneumo.train.loop import train

    run_dir, created = args.run_dir, None
    if run_dir is None:
        created = new_run_dir()
        run_dir = str(created)
        print(f"run folder: {run_dir}", flush=True)
    seed_config = config if config is not None else load_config(TrainConfig, runs.RunFolder(run_dir).config)
    # The process entry point is the one place allowed to seed Keras' global generator
    # (weight initialisation); pneumo.train.loop itself only uses explicit seeds.
    keras.utils.set_random_seed(seed_config.seed)
    try:
        summary = train(config, run_dir, resume=args.resume, allow_changed_pack=args.allow_changed_pack)
    except PneumoError:
        if created is not None and not any(created.iterdir()):
            created.rmdir()  # bad input: leave no empty run folder behind
        raise
    except Exception as e:
        traceback.print_exc()
        text = (str(e).strip().splitlines() or [""])[0]
        print(f"error: training failed: {type(e).__name__}: {text}", file=sys.stderr)
        return 1
    best = ""
    if summary["best_val_loss"] is not None:
        best = (f", best val_loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch']} "
                f"(val_dice {summary['best_val_dice']:.4f})")
    print(f"{summary['state']}: {summary['epochs_done']}/{summary['epochs']} epochs{best}; "
          f"run folder {summary['run_dir']}", flush=True)
    if summary["state"] == "stopped":
        print(f"continue with: python -m pneumo train --resume --run-dir {summary['run_dir']}", flush=True)
    return 0
