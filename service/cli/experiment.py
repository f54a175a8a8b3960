"""``sona experiment``: a seeded search on a validation split, then one evaluation on test.

Registered into the ``sona`` group by `service.cli`; all the work is in
`sona_lab.experiments.run_experiment`.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--path",
    "data_path",
    type=click.Path(),
    default=None,
    help="MovieLens folder (overrides the file's [experiment] path).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="results",
    show_default=True,
    help="Results go to OUT/<experiment name>/.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or log lines, only the results.")
def experiment(config: str, data_path: str | None, out: str, quiet: bool) -> None:
    """Search the space of CONFIG (an experiment TOML) on a validation split.

    Writes trials.jsonl (a re-run skips finished trials), summary.md, best.toml, final.json and
    the plots ndcg_vs_diversity.png and weights_effect.png, and prints the best setting beside
    the base config on validation and test.
    """
    from sona_lab.blas import single_threaded_blas

    single_threaded_blas()
    from sona_jax.data import DatasetError
    from sona_jax.search.scoring import format_final_table
    from sona_jax.search.space import ExperimentError
    from sona_lab.experiments import load_experiment, run_experiment

    def log(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    try:
        spec = load_experiment(config, data_path)
        result = run_experiment(spec, out, progress=not quiet, log_fn=log)
    except (ExperimentError, DatasetError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_final_table(result.final))
    stale = f"; {result.ignored} lines of another setup ignored" if result.ignored else ""
    click.echo(
        f"{len(result.records)} trials: {result.ran} run, {result.skipped} skipped "
        f"(already in trials.jsonl){stale}; {result.seconds:.1f}s"
    )
    click.echo(f"results in {result.out_dir}/ (summary.md, best.toml, final.json, plots)")
