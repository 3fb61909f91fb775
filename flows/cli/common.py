"""What every command shares: one-line errors with exit status 2, option parsing helpers, Prefect's offline
settings, and progress bars that switch themselves off when output is not a terminal."""

from __future__ import annotations

import functools
import os
import sys

import click

from eml_core.errors import ArgumentError, EmlError

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 110}
PREFECT_DEFAULTS = {
    # offline, 2 cores: the ephemeral server's first start needs longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
MODEL_HELP = "backbone:head (e.g. mobilenet_v2:gap_fc), a checkpoint path, or package.module:factory"
FACTORY_HELP = ("package.module:function that built the checkpoint given as --model (a checkpoint never chooses "
                "code to run by itself)")
DATASET_HELP = "cub:PATH, folder:ROOT[,CSV] or synthetic[:FOLDER]"
DEVICE_HELP = "cpu, cuda, cuda:N or auto"
SPLIT_RULE_HELP = ("classes: first half of the class ids trains, second half is evaluated (unseen classes; the "
                   "default for cub: and synthetic); official: the dataset's own per-image split (the default for "
                   "folder: and market1501:). Default: the dataset's")


def prefect_environment() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


class UserError(click.ClickException):
    """Bad input: one line on stderr, naming the command and the file or option, exit status 2."""

    exit_code = 2

    def __init__(self, command_path: str, message: str):
        super().__init__(message)
        self.command_path = command_path

    def show(self, file=None) -> None:
        click.echo(f"{self.command_path}: error: {self.message}", err=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def option_name(ctx: click.Context, field: str) -> str:
    """A configuration field (``shard_size``) as the command's option (``--shard-size``) when it has one."""
    for param in ctx.command.params:
        if param.name == field or f"--{field.replace('_', '-')}" in getattr(param, "opts", []):
            return next((o for o in param.opts if o.startswith("--")), param.opts[0]) if param.opts else field
    return field


def command(function):
    """Run a command body, turning bad input (EmlError), refused AWS calls and unusable paths into UserError."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return function(*args, **kwargs)
        except ArgumentError as error:
            raise UserError(ctx.command_path, one_line(f"{option_name(ctx, error.argument)}: {error.problem}")) \
                from None
        except EmlError as error:
            raise UserError(ctx.command_path, one_line(str(error))) from None
        except OSError as error:  # a folder that is a file, a name too long, a full disk...
            where = f"{error.filename}: " if error.filename else ""
            raise UserError(ctx.command_path, one_line(f"{where}{error.strerror or error}")) from None
        except Exception as error:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(error, (BotoCoreError, ClientError)):  # no credentials, access denied...: never a secret
                raise UserError(ctx.command_path, one_line(f"AWS error: {type(error).__name__}: {error}")) from None
            raise

    return wrapper


def split_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


class PointType(click.ParamType):
    """``X,Y`` pixel coordinates."""

    name = "X,Y"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            x, y = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected X,Y in pixels (e.g. 120,80), got {value!r}", param, ctx)
        return x, y


class InputSizeType(click.ParamType):
    """``HxW`` or ``native``."""

    name = "HxW|native"

    def convert(self, value, param, ctx):
        if value in ("native", "default") or isinstance(value, tuple):
            return value
        try:
            height, width = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"expected HxW (e.g. 224x224) or 'native', got {value!r}", param, ctx)
        if height < 1 or width < 1:
            self.fail(f"must be positive, got {value!r}", param, ctx)
        return height, width


def trust_model_factories(model_factory: str | None, *specs: str) -> None:
    """``--model-factory`` names the user's own code for a checkpoint saved from it; a direct
    ``package.module:factory`` model spec is the user's choice too. Both are trusted for this run (and the
    flow workers it starts); a factory named only inside a file is never."""
    from pathlib import Path

    from eml_core.models import is_factory_spec, trust_factory

    if model_factory:
        if not is_factory_spec(model_factory):
            raise ArgumentError("--model-factory", f"expected package.module:function, got {model_factory!r}")
        trust_factory(model_factory)
    for spec in specs:
        if spec and is_factory_spec(spec) and not Path(spec).exists():
            trust_factory(spec)


def progress_enabled() -> bool:
    """Progress bars only on a terminal (never in logs, pipes or CI), and not when EML_NO_PROGRESS is set."""
    return sys.stderr.isatty() and not os.environ.get("EML_NO_PROGRESS")
