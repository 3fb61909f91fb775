"""Human studies as Prefect flows: build, launch, collect (scheduled while a study is open), analyse."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.configs import StudyBuildConfig, StudyConfig, as_config
from tasks.studies import analyze, build, collect_responses, launch


@flow(name="build_study", log_prints=True)
def build_study(config: StudyBuildConfig) -> dict:
    """Stimuli, HIT pages and ledger, locally (no AWS call)."""
    config = as_config(StudyBuildConfig, config)
    return build(config.definition, config.out, config.source)


@flow(name="launch_study", log_prints=True)
def launch_study(config: StudyConfig) -> dict:
    """Upload stimuli and create the HITs of a built study (sandbox unless ``live``)."""
    config = as_config(StudyConfig, config)
    result = launch(config.folder, config.live)
    create_markdown_artifact(key="study-launch", markdown=(
        f"# Study launched ({'LIVE' if config.live else 'sandbox'})\n\n{result['hits']} HITs "
        f"({result['created']} created now), HIT type `{result['hit_type_id']}`, estimated cost "
        f"${result['estimate']['total_usd']:.2f} of a ${result['estimate']['balance_usd']:.2f} balance."))
    return result


@flow(name="collect_study", log_prints=True)
def collect_study(config: StudyConfig) -> dict:
    """Fetch new assignments into `responses`, approve those passing the catch trials."""
    config = as_config(StudyConfig, config)
    result = collect_responses(config.folder, config.live)
    create_table_artifact(key="study-collection", table=[result], description=f"collection of {config.folder}")
    return result


@flow(name="analyze_study", log_prints=True)
def analyze_study(config: StudyConfig) -> dict:
    """Aggregate responses (Figs. 6 and 12) with tests, confidence intervals and quality checks."""
    config = as_config(StudyConfig, config)
    result = analyze(config.folder)
    summary = result["summary"]
    create_table_artifact(key="study-summary", table=summary.to_dict("records"),
                          description=f"summary of {config.folder}")
    create_markdown_artifact(key="study-report", markdown=study_markdown(summary))
    return result


def study_markdown(summary) -> str:
    row = summary.iloc[0]
    return "\n".join([
        f"# {row['study_id']}: {row['first_method']} vs {row['second_method']}", "",
        f"{row['answers']} answers on {row['items']} items from {row['workers']} workers "
        f"(target {row['target_workers']}: {'met' if row['target_met'] else 'NOT met'}); "
        f"{row['workers_total'] - row['workers']} workers and {row['answers_excluded']} answers left out "
        f"(failed catch trials, straight-lining, held or rejected).", "",
        "| clearly more | slightly more | equally | slightly less | clearly less |", "|---:|---:|---:|---:|---:|",
        "| " + " | ".join(f"{row[f'share_{n}'] * 100:.1f}%" for n in
                         ("clearly_more", "slightly_more", "equally", "slightly_less", "clearly_less")) + " |", "",
        f"Mean score {row['mean_score']:+.2f} (95% CI over items {row['mean_score_ci_items_low']:+.2f} .. "
        f"{row['mean_score_ci_items_high']:+.2f}; over workers {row['mean_score_ci_workers_low']:+.2f} .. "
        f"{row['mean_score_ci_workers_high']:+.2f}); sign test over items p = {row['sign_test_p']:.3g}; "
        f"Wilcoxon over items "
        f"p = {row['wilcoxon_items_p']:.3g}.",
        f"Catch trials: {row['catch_answers']} answers, failure rate {row['catch_failure_rate'] * 100:.1f}%; "
        f"{row['straightliners']} straight-lining workers.",
    ])
