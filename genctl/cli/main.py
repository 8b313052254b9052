"""``genctl SUBCOMMAND [hydra overrides...]``.

``@hydra.main`` owns ``sys.argv``, so instead of wrapping Hydra in another argument parser (which
loses multirun, ``--cfg``, run folders and launchers) the dispatcher removes the subcommand word
and hands the rest of the command line to that subcommand's own Hydra app.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import TYPE_CHECKING

from genctl.config import GROUPS, config_dir, group_choices
from genctl.errors import GenctlError
from genctl.version import __version__

if TYPE_CHECKING:
    from omegaconf import DictConfig

SUBCOMMANDS = {
    "train": "train a model; writes a run folder (config, checkpoints, TensorBoard, samples, metrics.json)",
    "eval": "test NLL in nats and bits/dim (or MSE) of a checkpoint: genctl eval ckpt=RUN|PT|EXPORT",
    "sample": "image grid from a checkpoint: genctl sample ckpt=RUN|PT|EXPORT n=64 [mode=reconstruct|traverse|map|...]",
    "compare": "one table and figure of finished runs: genctl compare RUN_OR_SWEEP [...] [--out DIR]",
    "export": "weights (safetensors), config and model card, no pickle: genctl export ckpt=RUN [out=DIR]",
    "encode": "latent codes (posterior means, log-variances, labels) as safetensors: genctl encode ckpt=RUN|EXPORT [split=test]",
}


def usage() -> str:
    lines = [
        f"genctl {__version__}: train, evaluate and sample deep generative models of images",
        "",
        "usage: genctl SUBCOMMAND [KEY=VALUE ...] [-m] [--cfg job] [--help]",
        "",
        "subcommands:",
        *(f"  {name:<8}{text}" for name, text in SUBCOMMANDS.items()),
        "",
        "config groups (pick with GROUP=CHOICE, tune with GROUP.KEY=VALUE):",
        *(f"  {g:<11}{', '.join(group_choices(g))}" for g in GROUPS),
        "",
        "examples:",
        "  genctl train model=vae",
        "  genctl train model=ae optim=rmsprop optim.lr=1e-3 trainer.epochs=5",
        "  GENCTL_DATA=/data genctl train dataset=mnist trainer.max_time=10  # reads /data/MNIST/raw",
        "  genctl train dataset=cifar10 dataset.root=/path/to/cifar10",
        "  genctl train -m model.latent_dim=2,16 optim=adam,rmsprop      # a sweep of 4 runs",
        "  genctl train resume=runs/vae/2026-01-01_12-00-00-123456-a1b2  # the same model, data split, batch size and seed",
        "  genctl train hydra.run.dir=runs/mine overwrite=true           # replace the run that folder holds",
        "  genctl eval ckpt=runs/vae/2026-01-01_12-00-00-123456-a1b2 eval.k=1000",
        "  genctl sample ckpt=runs/vae/2026-01-01_12-00-00-123456-a1b2 n=64 mode=interpolate",
        "  genctl compare runs/multirun/2026-01-01_12-00-00-123456-a1b2",
        "",
        "`genctl SUBCOMMAND --help` lists every key; `genctl train --cfg job` prints the composed config.",
        "mnist, fashion_mnist and cifar10 are read from $GENCTL_DATA (default ./data) unless dataset.root=DIR.",
        "Errors are one line; set HYDRA_FULL_ERROR=1 for the full trace.",
        "",
        "guides (in the repository's docs/): USAGE.md (config groups, run folders, resuming), SWEEPS.md,",
        "TRACKERS.md, PARALLEL.md (torchrun, precision, compile), API.md (genctl.load/nll/encode), EXPORT.md,",
        "LATENT.md, QUALITY.md, MODELS.md; numbers: BENCHMARKS.md, RESULTS.md, SPEED.md",
    ]
    return "\n".join(lines)


def _resume_value(args: list[str]) -> str | None:
    """The run folder ``resume=`` names, as Hydra reads the override: a path that needs quoting
    (``resume='runs/my run (2)'``) or escaping is the path itself. None where there is no such
    override, or where Hydra would not read it as one path (a sweep, a syntax error): the
    pre-check reports that."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    line = next((a for a in args if a.startswith("resume=")), None)
    if line is None:
        return None
    try:
        (override,) = OverridesParser.create().parse_overrides([line])
    except OverrideParseException:
        return None
    value = override.value()
    return value if isinstance(value, str) and value else None


def _resume_args(args: list[str]) -> list[str]:
    """``resume=RUN``: apply RUN's stored settings first (genctl's own only) and keep writing into RUN's
    folder, named to Hydra in quotes that read back as exactly that folder."""
    from genctl.runs.folder import RunFolder, pinned_run_dir, replayed_overrides

    value = _resume_value(args)
    if value is None:
        return args
    folder = RunFolder.of(value)
    folder.refuse_planted_links()  # before its record is read, and long before anything is written there
    run = folder.path
    stored, left_out = replayed_overrides(run)
    if left_out and os.environ.get("RANK", "0") == "0":
        print(f"genctl train: warning: not replayed from {folder.overrides}: {', '.join(left_out)}", file=sys.stderr)
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args}
    kept = [o for o in stored if o.split("=", 1)[0].lstrip("+~") not in keys]
    if any(a.startswith("hydra.run.dir=") for a in args):
        return [*kept, *args]
    pinned = pinned_run_dir(run)
    if pinned is None:
        raise GenctlError(f"resume={value}: Hydra cannot be given {run} as hydra.run.dir (it holds '${{'); rename the run folder")
    return [*kept, *args, pinned]


def _rank_args(args: list[str]) -> list[str]:
    """Under torchrun every rank runs this: one run folder for all, named by rank 0 and written by it
    alone. Attempts that torchrun restarts (``--max-restarts``) get the first attempt's folder, where
    training continues from last.pt (:meth:`genctl.runs.folder.RunFolder.restart_checkpoint`)."""
    from genctl import distributed  # imports torch: only for multi-process runs

    distributed.init()
    if not any(a.startswith("hydra.run.dir=") for a in args):
        folder = distributed.launch_run_dir(f"runs/${{model.name}}/{distributed.new_run_name()}")
        args = [*args, f"hydra.run.dir={folder}"]
    if distributed.rank() > 0:
        args = [*args, "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return args


def _hold_run_folder(cfg: DictConfig, multirun: bool, args: list[str], held: contextlib.ExitStack) -> list[str]:
    """Hold the run folder of this training in ``held`` until it ends, so that a second ``genctl train``
    into it is refused (:meth:`genctl.runs.folder.RunFolder.hold`); the command line to hand to Hydra.

    One process writes a run folder: under torchrun rank 0 holds it, and only where the folder is
    named on the command line (``_rank_args`` names a new one, the same on every rank, after this).
    Otherwise the folder as the dispatcher resolved it is pinned on the command line, so Hydra writes
    into the folder that was checked and held (``${now:...}`` would resolve anew)."""
    from genctl.runs.folder import RunFolder, pinned_run_dir, resolved_path

    folder = None if multirun or os.environ.get("RANK", "0") != "0" else resolved_path(cfg, "hydra.run.dir")
    if folder is None:
        return args
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        pinned = pinned_run_dir(folder)
        if pinned is None:
            return args
        args = [*args, pinned]
    elif not any(a.startswith("hydra.run.dir=") for a in args):
        return args
    held.enter_context(RunFolder(folder).hold())
    return args


def _check_continuation(cfg: DictConfig) -> None:
    """Refuse a resume whose settings cannot continue the run (:func:`genctl.runs.folder.check_continuation`)."""
    from genctl.runs.checkpoint import load_checkpoint  # imports torch
    from genctl.runs.folder import LAST, check_continuation, resolve_checkpoint

    path = resolve_checkpoint(cfg.resume, prefer=LAST)
    check_continuation(cfg, path, load_checkpoint(path, resuming=True)["config"])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        try:
            print(usage(), flush=True)
        except BrokenPipeError:  # `genctl --help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"genctl {__version__}")
        return 0
    subcommand, rest = args[0], args[1:]
    if subcommand not in SUBCOMMANDS:
        print(f"genctl: error: unknown subcommand '{subcommand}'; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    if subcommand == "compare":  # reads run folders; composes no config
        from genctl.cli.compare import main as compare

        return compare(rest)
    from genctl.cli.errors import full_error
    from genctl.cli.overrides import compose_command_line  # imports Hydra: not needed for --help
    from genctl.runs import folder

    with contextlib.ExitStack() as held:  # the run folder's lock, from before the checks until training ends
        try:
            config_dir()
            if subcommand == "train":
                rest = _resume_args(rest)
            composed = compose_command_line(subcommand, rest)  # Hydra's own composition errors would be several lines
            rest, cfg = composed.args, composed.cfg
            resumed = None
            if subcommand == "train" and cfg is not None:
                if cfg.resume:
                    _check_continuation(cfg)
                rest = _hold_run_folder(cfg, composed.multirun, rest, held)
                folder.claim(cfg, composed.multirun)
                if cfg.resume and not composed.multirun and os.environ.get("RANK", "0") == "0":
                    resumed = folder.RunFolder.of(cfg.resume)
            if subcommand == "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
                rest = _rank_args(rest)
            app = importlib.import_module(f"genctl.cli.{subcommand}")
        except GenctlError as e:
            print(f"genctl {subcommand}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if full_error():
                raise
            print(f"genctl {subcommand}: error: interrupted before it started: nothing was written", file=sys.stderr)
            return 130
        sys.argv = [f"genctl {subcommand}", *rest]
        try:
            with resumed.kept_on_failure() if resumed else contextlib.nullcontext():
                app.main()
        except KeyboardInterrupt:  # outside the task, which says itself what an interruption left (exit_on_user_error)
            if full_error():
                raise
            print(f"genctl {subcommand}: error: interrupted", file=sys.stderr)
            return 130
    return 0
