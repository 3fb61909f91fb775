"""``eml index build`` and ``eml retrieve``: interactive retrieval by region (paper Section VII-B).

    eml index build --gallery SPEC --model SPEC --out DIR [--split gallery]
    eml retrieve --index DIR (--query IMAGE (--box X0,Y0,X1,Y1 | --point X,Y) | --queries FILE) [--k 10]
        [--method partial,overall,...] [--out LOCATION]

Both run Prefect flows (``index_build``, ``interactive_retrieval``); every argument is checked first (files,
the index, its model's fingerprint), so bad input is one line and exit status 2 before any server starts.
"""

from __future__ import annotations

import click

from flows.cli.common import (
    CONTEXT,
    DEVICE_HELP,
    FACTORY_HELP,
    MODEL_HELP,
    PointType,
    command,
    prefect_environment,
    split_list,
    trust_model_factories,
)

GALLERY_HELP = "market1501:PATH, faces:PATH, folder:ROOT[,CSV], cub:PATH or synthetic[:FOLDER]"
METHODS_HELP = ("comma-separated: partial (partial_centre, the paper's), partial_mean (partial_box_mean), overall, "
                "crop, mask; default: every method that applies to the region (crop, mask and partial_mean need a box)")


class BoxType(click.ParamType):
    """``X0,Y0,X1,Y1`` pixel edges."""

    name = "X0,Y0,X1,Y1"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            x0, y0, x1, y1 = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected X0,Y0,X1,Y1 in pixels (e.g. 10,20,60,90), got {value!r}", param, ctx)
        return x0, y0, x1, y1


@click.group("index", context_settings=CONTEXT)
def index():
    """Gallery indexes: a gallery embedded once, searched by every retrieval run."""


@index.command("build", context_settings=CONTEXT)
@click.option("--gallery", required=True, help=GALLERY_HELP)
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", required=True, help="index folder (local or s3://bucket/prefix); an existing index there is "
                                            "appended to (only images it does not hold are embedded)")
@click.option("--split", "splits", default=None, help="comma-separated splits of the dataset to index (e.g. gallery "
                                                      "for Market-1501, test); default: every image")
@click.option("--similarity", type=click.Choice(["cosine", "dot"]), default="cosine",
              help="how the model compares embeddings (dot: a 'no norm' model)")
@click.option("--shard-size", type=click.IntRange(min=1), default=256, help="at most this many images per shard task")
@click.option("--commit-every", type=click.IntRange(min=1), default=16, help="shards embedded between two commits")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--model-factory", help=FACTORY_HELP)
@command
def build(gallery, model, out, splits, similarity, shard_size, commit_every, device, model_factory):
    """Embed a gallery once into an index (sharded, GPU when present); appending embeds only new images."""
    from tasks.configs import IndexBuildConfig, validated

    trust_model_factories(model_factory, model)
    config = validated(IndexBuildConfig, gallery=gallery, model=model, out=out,
                       splits=split_list(splits) if splits is not None else None, similarity=similarity,
                       shard_size=shard_size, commit_every=commit_every, device=device)
    config.check_inputs()
    from tasks.retrieval import check_index_build

    check_index_build(config)  # an index already there must be this model's
    prefect_environment()
    from flows.index_build import index_build

    result = index_build(config)
    errors = result["errors"]
    click.echo(f"index {result['index']}: {result['count']} images ({result['added']} embedded now, "
               f"{result['gallery_items'] - result['added']} already there or left out); "
               f"{int((errors['severity'] == 'error').sum())} errors, see {result['build']}/errors.parquet")


@click.command("retrieve", context_settings=CONTEXT)
@click.option("--index", "index_location", required=True, help="index folder (from `eml index build`)")
@click.option("--query", default=None, help="query image (give --box or --point)")
@click.option("--box", type=BoxType(), default=None, help="the query region: a box, pixel edges")
@click.option("--point", type=PointType(), default=None, help="the query region: a point, pixel coordinates")
@click.option("--label", type=int, default=None, help="label of the region's content (scores precision@k by label)")
@click.option("--queries", default=None, help="CSV or Parquet of queries: image, x0,y0,x1,y1 or x,y[, query_id, label]")
@click.option("--k", type=click.IntRange(min=1, max=1000), default=10, help="retrieved images per query and method")
@click.option("--method", "--methods", "methods", default=None, help=METHODS_HELP)
@click.option("--out", default="runs/retrieval", help="results root (local or s3://bucket/prefix)")
@click.option("--model", default=None, help="the index's model (default: the one the index records)")
@click.option("--root", default=None, help="folder of the index's images, if they moved")
@click.option("--montages", type=click.IntRange(min=0), default=50, help="montage PNGs written (first queries)")
@click.option("--maps", "point_maps", is_flag=True, help="overlay the region's point-specific maps (Fig. 13)")
@click.option("--shard-size", type=click.IntRange(min=1), default=64, help="at most this many queries per shard task")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--model-factory", help=FACTORY_HELP)
@command
def retrieve(index_location, query, box, point, label, queries, k, methods, out, model, root, montages, point_maps,
             shard_size, device, model_factory):
    """Rank an index by a query region (partial similarity, and the overall/crop/mask baselines); prints the
    ranking and writes it with montages in the paper's layout to a retrieval run under --out."""
    from tasks.configs import RetrievalConfig, validated

    trust_model_factories(model_factory, model or "")
    config = validated(RetrievalConfig, index=index_location, query=query, box=box, point=point, label=label,
                       queries=queries, k=k, methods=split_list(methods) if methods is not None else None, out=out,
                       model=model, root=root, montages=montages, point_maps=point_maps, shard_size=shard_size,
                       device=device)
    config.check_inputs()
    from tasks.retrieval import check_retrieval

    check_retrieval(config)  # the index opens, its model loads and fits it
    prefect_environment()
    from flows.interactive_retrieval import interactive_retrieval
    from tasks.retrieval import ranking_text

    result = interactive_retrieval(config)
    rankings, location = result["rankings"], result["location"]
    shown = list(dict.fromkeys(rankings["query_id"])) if len(rankings) else []
    if config.query is not None:
        for query_id in shown:
            montage = result["montages"].get(query_id)
            click.echo(ranking_text(rankings, query_id, f"{location}/{montage}" if montage else None))
    else:
        click.echo(f"{len(shown)} queries ranked; montages of {len(result['montages'])} in {location}/montages")
    evals = result["eval"]
    for _, row in evals[evals["metric"] == "map"].iterrows():
        click.echo(f"mAP by label, {row['method']}: {row['value']:.4f} ({int(row['count'])} queries)")
    errors = result["errors"]
    problems = int((errors["severity"] == "error").sum())
    click.echo(f"retrieval run: {location}" + (f" ({problems} errors, see errors.parquet)" if problems else ""))
