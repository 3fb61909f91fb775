"""``eml demo``: the main job on the embedded default data (the `demo` flow), and what it prints."""

from __future__ import annotations

import click

from flows.cli.common import CONTEXT, MODEL_HELP, command, prefect_environment


@click.command("demo", context_settings=CONTEXT)
@click.option("--out", default="out/demo", help="local folder for everything the demo writes")
@click.option("--model", "explain_model", default="mobilenet_v2:gap", help=f"model of the explain step: {MODEL_HELP}")
@command
def demo(out, explain_model):
    """Explain an example pair, generate the embedded default data, train the default model, evaluate
    localization (Tables I, II), build the example human study, train and evaluate a small cross-view model
    (orientation), retrieve by region (index, rankings, montages), and check the maps' faithfulness and sanity."""
    from tasks.configs import DemoConfig, validated

    config = validated(DemoConfig, out=out, explain_model=explain_model)
    config.check_inputs()
    prefect_environment()
    from flows.demo import demo as demo_flow
    from tasks.explain import summary_lines
    from tasks.faithfulness import markdown_report as faithfulness_report
    from tasks.summary import markdown_report

    result = demo_flow(config)
    click.echo("== 1/5 explain the built-in example pair")
    for line in summary_lines(result["explanation"]):
        click.echo(line)
    click.echo(f"== 2/5 embedded default dataset -> {result['dataset']}")
    click.echo("== 3/5 train the default model (mobilenet_v2 frozen + gap_fc, Multi-Similarity loss)")
    click.echo(result["training"]["retrieval_metrics"].to_string(index=False))
    click.echo("== 4/5 localization flow (Prefect, ephemeral mode)")
    click.echo(markdown_report(result["localization"], "the embedded default dataset"))
    study = result["study"]
    click.echo(f"== 5/5 the example human study (built, not launched, nothing served): {study['items']} items in "
               f"{study['hits']} HITs -> {study['folder']}; review {study['folder']}/hits/*.html, then "
               f"`eml study serve` or `eml study launch`")
    click.echo(f"\nexplanations: {out}/explain; checkpoint: {out}/model.pt; localization results: "
               f"{result['localization']['location']}")
    from tasks.orientation_summary import orientation_markdown

    crossview = result["crossview_training"]
    click.echo(f"\n== cross-view orientation (paper Section VII-A, Fig. 9): a two-branch model (frozen mobilenet_v2 "
               f"branches, shared FC trained with CVM-Net's loss on rotated aerial images) -> "
               f"{crossview['checkpoint']}")
    click.echo(", ".join(f"R@{r['at']} {r['recall']:.3f}" for _, r in crossview["crossview_recall"].iterrows()))
    click.echo(orientation_markdown(result["orientation"], "the demo's embedded cross-view pairs"))
    index, retrieval = result["index"], result["retrieval"]
    click.echo(f"\n== interactive retrieval: index of the {index['count']} embedded images -> {index['index']}; "
               f"{len(set(retrieval['rankings']['query_id']))} query regions (one object of a two-object image each) "
               f"ranked by every method")
    for _, row in retrieval["eval"][retrieval["eval"]["metric"] == "map"].iterrows():
        click.echo(f"   mAP by the marked object's class, {row['method']}: {row['value']:.3f}")
    click.echo(f"   rankings and montages: {retrieval['location']}; study: `.venv/bin/eml study build "
               f"data/studies/retrieval_demo.yaml --out studies/retrieval-demo`")
    click.echo("\n== faithfulness of the maps to the similarity, and sanity checks (2 pairs of the localization run)")
    click.echo(faithfulness_report(result["faithfulness"]))
    click.echo(f"faithfulness results: {result['faithfulness']['location']}")
