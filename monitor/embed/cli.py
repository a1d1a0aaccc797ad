"""``monitor model export``: build the ONNX copies of the embedding model ahead of time.

Why a command: the service exports on its first start when the cache lacks the model, which costs
seconds to a minute and needs a writable ``model_cache_dir``. Running this at image build time (or
after a model change) makes starts fast and the cache folder read-only safe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

model_app = typer.Typer(help="Embedding model files (ONNX exports).", no_args_is_help=True, add_completion=False)


@model_app.command(
    name="export", help="Export the embedding model to ONNX (int8 and/or fp32) into the model cache, replacing a broken export; prints each folder."
)
def export_cmd(
    backend: list[str] = typer.Option(["onnx-int8"], help="onnx-int8, onnx-fp32 (repeat for both), or 'all'."),
    model: Optional[str] = typer.Option(None, help="Model folder or bundled:... (default: the configured embedding_model)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default: the configured model_cache_dir)."),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="YAML file of options."),
) -> None:
    from monitor.config import load_settings
    from monitor.embed.backends import ensure_exported
    from monitor.embed.onnx_export import ExportedModelError

    # WARNING at the root: onnxruntime's fusion and quantizer log every tensor at INFO; ours say what is built where.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("monitor.embed").setLevel(logging.INFO)
    settings = load_settings(config)
    kinds = ["onnx-int8", "onnx-fp32"] if "all" in backend else backend
    unknown = sorted(set(kinds) - {"onnx-int8", "onnx-fp32"})
    if unknown:
        raise typer.BadParameter(f"unknown backend(s) {', '.join(unknown)}: onnx-int8, onnx-fp32 or all")
    for kind in kinds:
        try:
            folder = ensure_exported(
                model or settings.embedding_model, kind, cache_dir or settings.model_cache_dir, replace_broken=True  # type: ignore[arg-type]
            )
        except ExportedModelError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{kind}: {folder}")
