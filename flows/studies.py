"""Human studies as Prefect flows: build, launch, collect (scheduled while a study is open), analyse.

Artifacts are keyed by the study id (``study-<study id>-...``), so each study keeps its own history."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.configs import StudyAnalysisConfig, StudyBuildConfig, StudyConfig, as_config
from tasks.reports import artifact_key, publish_study, study_markdown  # noqa: F401 (study_markdown: the CLI's)
from tasks.studies import analyze, build, check_study, collect_responses, launch, record_analysis, status


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
    study_id = check_study(config.folder).study_id
    create_markdown_artifact(key=artifact_key("study", "launch", study_id), markdown=(
        f"# Study launched ({'LIVE' if config.live else 'sandbox'})\n\n{result['hits']} HITs "
        f"({result['created']} created now), HIT type `{result['hit_type_id']}`, estimated cost "
        f"${result['estimate']['total_usd']:.2f} of a ${result['estimate']['balance_usd']:.2f} balance."))
    return result


@flow(name="collect_study", log_prints=True)
def collect_study(config: StudyConfig) -> dict:
    """Fetch new assignments into `responses`, approve those passing the catch trials."""
    config = as_config(StudyConfig, config)
    result = collect_responses(config.folder, config.live)
    study_id = check_study(config.folder).study_id
    create_table_artifact(key=artifact_key("study", "collection", study_id), table=[result],
                          description=f"collection of {config.folder}")
    return result


@flow(name="analyze_study", log_prints=True)
def analyze_study(config: StudyAnalysisConfig) -> dict:
    """Aggregate responses (Figs. 6 and 12) with tests, confidence intervals and quality checks; publish the
    report (chart inside, progress, spend, worker quality, held assignments); with ``results``, record the
    analysis in that results root's catalog."""
    config = as_config(StudyAnalysisConfig, config)
    config.check_inputs()
    result = analyze(config.folder, config.include_flagged)
    study = status(config.folder)
    result["artifacts"] = publish_study(result, study, config.folder)
    if config.results is not None:
        result["catalog"] = record_analysis(config.folder, config.results, result, study)
    return result
