"""`vlmparity synth`: write a synthetic MME or MMMU-val parquet folder (for tests, demos and the simulator)."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

import typer


class Benchmark(StrEnum):
    mme = "mme"
    mmmu = "mmmu"


def register(app: typer.Typer) -> None:
    """Add the `synth` command to the app."""

    @app.command("synth")
    def synth(
        benchmark: Benchmark = typer.Argument(
            ..., help="Which benchmark to imitate: mme (test) or mmmu (validation)."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Folder to write (data/<split>-00000-of-00001.parquet)."
        ),
        n: int | None = typer.Option(
            None, "--n", "-n", help="Number of questions (default: full size, 2374 MME / 900 MMMU)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives byte-identical files."),
        workers: int | None = typer.Option(
            None, "--workers", help="Processes to draw images with (default: up to 2)."
        ),
    ) -> None:
        """Write a synthetic stand-in for MME or MMMU-val with the real columns, types and structure.

        Pictures are drawn so their content decides the answer; nothing in them is the real benchmark.
        """
        from vlmparity import synth as synth_data
        from vlmparity.cli import require_at_least

        require_at_least("--workers", workers, 1)
        started = time.perf_counter()
        if benchmark is Benchmark.mme:
            folder = synth_data.write_mme(out, n=n, seed=seed, workers=workers)
            data_file, what = folder / synth_data.MME_FILE, "MME test"
        else:
            folder = synth_data.write_mmmu(out, n=n, seed=seed, workers=workers)
            data_file, what = folder / synth_data.MMMU_FILE, "MMMU validation"
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(data_file).metadata.num_rows
        size_mb = data_file.stat().st_size / 1e6
        elapsed = time.perf_counter() - started
        typer.echo(
            f"wrote {rows} synthetic {what} questions to {data_file} ({size_mb:.1f} MB, {elapsed:.1f} s)"
        )
