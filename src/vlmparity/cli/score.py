"""`vlmparity score`: score answers written by other tools (no server), printing the same tables as a run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `score` command to the app."""
    app.command(
        "score",
        help="Score saved answers without any server: an official MME results folder, an MMMU predictions "
        "file with its answer key, MMMU raw responses, or lmms-eval --log_samples files. Prints lmms-eval's "
        "table and the per-category / per-subject breakdowns.",
    )(score)


def score(
    mme_results: Path | None = typer.Option(
        None, "--mme-results", metavar="DIR", help="Official MME results folder (<category>.txt, 4 columns)."
    ),
    mmmu_predictions: Path | None = typer.Option(
        None,
        "--mmmu-predictions",
        metavar="FILE",
        help="MMMU {id: answer} JSON (e.g. total_val_output.json).",
    ),
    answer_key: Path | None = typer.Option(
        None,
        "--answer-key",
        metavar="FILE",
        help="MMMU answer key for --mmmu-predictions (answer_dict_val.json).",
    ),
    mmmu_responses: Path | None = typer.Option(
        None, "--mmmu-responses", metavar="DIR", help="Folder of MMMU <Subject>/output.json raw responses."
    ),
    lmms_samples: list[Path] | None = typer.Option(
        None,
        "--lmms-samples",
        metavar="FILE",
        help="lmms-eval --log_samples .jsonl file or folder (repeat for several).",
    ),
    mmmu_parser: str | None = typer.Option(
        None,
        "--mmmu-parser",
        metavar="lmms-eval|official",
        help="How --mmmu-responses are parsed: lmms-eval (default; lmms-eval 0.7.3's parse, as a live run "
        "scores) or official (MMMU's main_parse_and_eval.py: raw text, its letter parse, random.seed(42), "
        "its subject order).",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help="Seed of the MMMU random fallback (default: 0 as lmms-eval, 42 with --mmmu-parser official).",
    ),
    partial_pairs: bool = typer.Option(
        False,
        "--partial-pairs",
        help="MME: score an image with one question present (acc only) instead of stopping as lmms-eval does.",
    ),
) -> None:
    """Score saved answers and print lmms-eval's tables."""
    from vlmparity import offline
    from vlmparity.errors import ConfigError
    from vlmparity.report import tables
    from vlmparity.tasks import mme_offline, mmmu_offline

    chosen = [
        name
        for name, value in (
            ("--mme-results", mme_results),
            ("--mmmu-predictions", mmmu_predictions),
            ("--mmmu-responses", mmmu_responses),
            ("--lmms-samples", lmms_samples),
        )
        if value
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "give exactly one input" + (f" (got {', '.join(chosen)})" if chosen else ""),
            hint="--mme-results DIR | --mmmu-predictions FILE --answer-key FILE | --mmmu-responses DIR | "
            "--lmms-samples FILE",
        )
    if answer_key is not None and mmmu_predictions is None:
        raise ConfigError(
            "--answer-key goes with --mmmu-predictions", hint="drop it or add --mmmu-predictions"
        )

    if mmmu_parser is not None and mmmu_responses is None:
        raise ConfigError(
            "--mmmu-parser goes with --mmmu-responses", hint="drop it or add --mmmu-responses DIR"
        )
    if mmmu_parser is not None and mmmu_parser not in mmmu_offline.MMMU_PARSERS:
        raise ConfigError(
            f"--mmmu-parser {mmmu_parser!r} is not a parser",
            hint=f"use one of: {', '.join(mmmu_offline.MMMU_PARSERS)}",
        )

    if mme_results is not None:
        outs = [mme_offline.score_mme_results(mme_results, allow_partial_pairs=partial_pairs)]
    elif mmmu_predictions is not None:
        if answer_key is None:
            raise ConfigError(
                "--mmmu-predictions needs --answer-key", hint="e.g. --answer-key answer_dict_val.json"
            )
        outs = [mmmu_offline.score_mmmu_predictions(mmmu_predictions, answer_key)]
    elif mmmu_responses is not None:
        outs = [
            mmmu_offline.score_mmmu_responses(
                mmmu_responses, seed=seed, parser=mmmu_parser or mmmu_offline.DEFAULT_MMMU_PARSER
            )
        ]
    else:
        outs = offline.score_lmms_samples(lmms_samples or [], allow_partial_pairs=partial_pairs)

    typer.echo(tables.render([o.result for o in outs]), nl=False)
    for out in outs:
        for note in out.notes:
            typer.echo(f"note ({out.task}): {note}")
