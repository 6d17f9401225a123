"""The filter stage: run every check on every sample, keep what passes, explain every rejection.

Input: a sample store or any JSONL whose records have `problem_id` (or `id`), `problem` and
`completion`, and `answer` where the problem has a gold (optionally `finish_reason`,
`completion_tokens`, `key`). Output directory:

    kept.jsonl       kept samples with their verdicts
    rejected.jsonl   rejected samples with their verdicts and `reject_reason` (first failing check)
    problems.jsonl   code problems' tests, once per problem (samples hold `meta.tests_ref`)
    report.json      counts per check in pipeline order, settings, timings
    report.md        the same as tables, with plots (lengths kept vs rejected, acceptance per source)
    train.jsonl      kept samples as a chat dataset for TRL (or train.parquet; see `export`)
    problem_stats.jsonl  one row per problem: pass rate, lengths, kept, answer agreement
    selected_problems.jsonl  with `filter.select`: the problems in the pass-rate band, for `distill generate`
    pairs.jsonl      with `export.pairs`: (prompt, chosen, rejected) for DPO

The input is streamed, never held: memory does not grow with the number of samples (a million R1
traces are 15-30 GB of JSONL). Three passes over the input:

1. scan: every record is read and validated; what needs the whole input is counted from small
   summaries (the teachers' close-tag counts; each sample's key, problem, index and source go to
   an on-disk table, not to memory);
2. judge: the per-sample checks run in the worker pool; each verdict (with the sample's MinHash
   signature) is committed to `OUT/.filter-state.sqlite` as it arrives. A rerun (after a crash,
   Ctrl-C, or with other dedup or decontamination settings) reuses every verdict whose sample and
   per-sample settings are unchanged and judges only the rest;
3. set checks and writing: near-duplicates per problem from the stored signatures (one problem in
   memory at a time), decontamination, then the outputs, written to temporary files and renamed
   at the end: an interrupted filter leaves the previous outputs (and the input) as they were.

`shard=(i, N)` judges only the problems of shard i (the slicing of `distill generate --shard`, so
every sample of a problem is in one shard and dedup stays exact); `merge_filtered` joins the
shards' output directories into one, equal to an unsharded run.

The modules follow the stream's passes: `read` (input and validation), `state` (the saved verdicts),
`stream` (the passes in order: scan, judge, the set-level tiers, dedup, then selection,
decontamination and the outputs), `tiers` (the set-level rules that decide an answer: vote, judge
tier, gold health), `selection` (pass-rate bands), `outputs` (files, the training record, the
report), `merge` (shards joined) and `explain` (one sample).
"""

from distill.filter.explain import explain
from distill.filter.merge import merge_filtered, merge_reports
from distill.filter.outputs import (
           PAIRS,
           UNDECIDED_NOTE,
           Tally,
           _training_record,
           train_schema,
           write_markdown,
)
from distill.filter.read import REQUIRED, input_files, iter_records, read_samples
from distill.filter.state import STATE, STATE_FORMAT
from distill.filter.stream import filter_samples

__all__ = ["PAIRS", "REQUIRED", "STATE", "STATE_FORMAT", "UNDECIDED_NOTE", "Tally", "_training_record", "explain",
           "filter_samples", "input_files", "iter_records", "merge_filtered", "merge_reports", "read_samples",
           "train_schema", "write_markdown"]
