"""The ``samkit`` command line: ``samkit SUBCOMMAND [key=value | --key value ...]``.

Exit codes: 0 success, 2 usage error (unknown argument, bad value), 1 runtime failure (missing
model file, unreadable input, ...). User errors print one clear message and no traceback; add
``--debug`` to see the traceback.
"""

from __future__ import annotations

import difflib
import json
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import PromptError, SamkitError
from . import commands as cli_commands
from . import folder_jobs
from .args import Arg, Command, UsageError, format_help, parse_args
from .serve import SERVE_ARGS, SERVE_USAGE

MODEL_HELP = "checkpoint path, official file name (sam_b.pt, mobile_sam.pt, ...) or variant name"


def _cmd_version(args: dict[str, Any]) -> int:
    print(f"samkit {__version__}")
    return 0


def _cmd_info(args: dict[str, Any]) -> int:
    from ..model import SAM

    model = SAM(args["model"], cache_dir=args["cache_dir"])
    info = model.info(verbose=not args["json"])
    if args["json"]:
        print(json.dumps(info.to_dict(), indent=2))
    return 0


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> None:
    COMMANDS[command.name] = command


register(Command("version", "Print the samkit version.", [], _cmd_version, usage=""))
register(
    Command(
        "info",
        "Print a model summary: layers, parameters per part, image-encoder GFLOPs.",
        [
            Arg("model", "sam_b.pt", MODEL_HELP, "str"),
            Arg("cache_dir", None, "directory for downloaded checkpoints", "path"),
            Arg("json", False, "print the summary as JSON", "bool"),
        ],
        _cmd_info,
    )
)


def _runner(name: str):
    def run(args: dict[str, Any]) -> int:
        from . import commands as cli_commands

        return getattr(cli_commands, name)(args)

    return run


register(
    Command(
        "predict",
        "Segment images from prompts (bboxes/points), or everything when no prompt is given.",
        cli_commands.PREDICT_ARGS,
        _runner("run_predict"),
        usage="model=sam_b.pt source=img.jpg [bboxes=[x1,y1,x2,y2]] [key=value ...]",
    )
)
register(
    Command(
        "annotate",
        "Turn an image folder into a YOLO or COCO segmentation dataset (detector or label boxes -> SAM).",
        cli_commands.ANNOTATE_ARGS,
        _runner("run_annotate"),
        usage="data=images/ (labels=labels/ | det_model=yolov8x.pt) [format=yolo|coco] [key=value ...]",
    )
)


register(
    Command(
        "everything",
        "Segment everything in every image of a folder (or s3:// URI): one SA-1B JSON per image.",
        folder_jobs.EVERYTHING_FOLDER_ARGS,
        folder_jobs.run_everything_folder,
        usage="data=images/ sam_model=sam_b.pt [output_dir=DIR] [engine=ray] [key=value ...]",
    )
)
register(
    Command(
        "embed",
        "Precompute the image embedding of every image of a folder: one .npz per image.",
        folder_jobs.EMBED_ARGS,
        folder_jobs.run_embed,
        usage="data=images/ sam_model=sam_b.pt [output_dir=DIR] [engine=ray] [key=value ...]",
    )
)

register(
    Command(
        "export",
        "Export a model to ONNX (image encoder + prompt decoder with the annotation tools' interface).",
        cli_commands.EXPORT_ARGS,
        _runner("run_export"),
        usage="model=sam_b.pt format=onnx [output_dir=DIR] [quantize=true] [key=value ...]",
    )
)
register(
    Command(
        "benchmark",
        "Time encoders, decoders and segment-everything per model and precision (seeded weights).",
        cli_commands.BENCHMARK_ARGS,
        _runner("run_benchmark"),
        usage="[models=[sam_b,mobile_sam]] [precisions=[fp32,bf16]] [runs=3] [key=value ...]",
    )
)

register(
    Command(
        "seed",
        "Write a stand-in checkpoint with seeded weights (offline trials; its masks mean nothing).",
        cli_commands.SEED_ARGS,
        _runner("run_seed"),
        usage="model=sam_b [out=sam_b.pt]",
    )
)


def _serve(args: dict[str, Any]) -> int:
    from .serve import run_serve

    return run_serve(args)


register(
    Command(
        "serve",
        "Annotate a folder in the browser (click -> mask -> save); JSON API; Label Studio backend.",
        SERVE_ARGS,
        _serve,
        usage=SERVE_USAGE,
    )
)


def _top_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: samkit SUBCOMMAND [key=value | --key value ...] [--debug]",
        "",
        "Segment Anything (SAM, MobileSAM) from the command line.",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Run 'samkit SUBCOMMAND --help' for its arguments and defaults."]
    return "\n".join(lines)


def run() -> int:
    """The ``samkit`` program: :func:`main` on ``sys.argv`` with the default SIGPIPE action, so
    that ``samkit ... | head`` ends quietly like other command-line tools. (:func:`main` itself
    leaves the process's signal handlers alone: it is also called in-process.)"""
    if hasattr(signal, "SIGPIPE") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        return _cmd_version({})
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        print(
            f"samkit: error: unknown subcommand {name!r}{hint} (see 'samkit --help')",
            file=sys.stderr,
        )
        return 2
    if "-h" in rest or "--help" in rest:
        print(format_help(command.name, command.summary, command.spec, command.usage))
        return 0
    try:
        values = parse_args(rest, command.spec, command.name)
        return command.run(values)
    except UsageError as e:
        if debug:
            traceback.print_exc()
        print(f"samkit {name}: error: {e}", file=sys.stderr)
        return 2
    except PromptError as e:  # a bad prompt value is a usage error, whenever it is found
        if debug:
            traceback.print_exc()
        print(f"samkit {name}: error: {e}", file=sys.stderr)
        return 2
    except SamkitError as e:
        if debug:
            traceback.print_exc()
        print(f"samkit {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"samkit {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an environment problem: say so, traceback with --debug
        if debug:
            traceback.print_exc()
        print(
            f"samkit {name}: unexpected error: {type(e).__name__}: {e} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
