"""Synthetic MME and MMMU-val sets in the real schemas (`vlmparity synth`, the demo, tests, benchmarks).

It stands apart from the evaluation path: it imports only the leaves and writes parquet folders that the
evaluation path then reads like any downloaded dataset. `build` writes the files, `mme` (with
`mme_perception`, `mme_cognition`) and `mmmu` draw the questions, `draw` holds the drawing helpers.
"""

from __future__ import annotations

from vlmparity.synth.build import (
    MME_COLUMNS,
    MME_FILE,
    MMMU_COLUMNS,
    MMMU_FILE,
    MMMU_IMAGE_COLUMNS,
    SYNTH_VERSION,
    hf_features,
    mme_rows,
    mmmu_rows,
    write_mme,
    write_mmmu,
)

__all__ = [
    "MME_COLUMNS",
    "MME_FILE",
    "MMMU_COLUMNS",
    "MMMU_FILE",
    "MMMU_IMAGE_COLUMNS",
    "SYNTH_VERSION",
    "hf_features",
    "mme_rows",
    "mmmu_rows",
    "write_mme",
    "write_mmmu",
]
