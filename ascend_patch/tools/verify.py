"""Accuracy check of any model: CPU fp32 reference vs the patched model on the device.

Every NPU port we studied wrote this script by hand: run the model on the CPU in fp32, run it on
the NPU, and compare per output (cosine similarity, max/mean abs diff, mean relative error, top-1
agreement for classifiers) plus a determinism check (two device runs bit-identical). ``without``
adds runs with a patch switched off, so the table shows what that patch buys; a recipe's own
checks (MingTok's KV-cache decode) run in every device run; a bf16 or fp16 run adds the CPU at the
same dtype, so rounding is told apart from the port.

    result = verify("dinov2", device="sim", without=["gelu"], tiny=True)
    result = verify("path/to/hf_folder", device="sim", random_init=True)
    result = verify(model, example_inputs, device="sim")          # or verify(build), build() -> (model, inputs)
    print(result.to_text()); result.passed
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import ascend_patch

from ..engine.table import table
from ..recipes import Check
from .compare import compare
from .environment import environment
from .errors import one_line
from .inputs import Inputs, flatten_outputs
from .models import InputError, parse_dtype, resolve_device
from .subjects import ALL, Built, Subject, resolve
from .unpatched import run_fresh

logger = logging.getLogger("ascend_patch")
phases = logging.getLogger("ascend_patch.progress")  # a line per finished phase (the CLI shows them)

SAMPLE = 8  # values of each output kept in the JSON, to eyeball a mismatch


@dataclass
class OutputMetrics:
    name: str
    cosine_similarity: float
    max_abs_diff: float
    mean_abs_diff: float
    mean_relative_error: float  # mean|ref - dev| / mean|ref|
    top1_agreement: float | None  # fraction of samples with the same argmax (classifier outputs only)
    deterministic: bool | None  # two device runs gave bit-identical values (None: a check, run once)
    passed: bool  # mean_relative_error <= threshold
    check: str | None = None  # the recipe check this row is from; None for a model output
    reference_sample: list[float] = field(default_factory=list)  # first values, flattened
    sample: list[float] = field(default_factory=list)


@dataclass
class VerifyRun:
    label: str  # "dinov2" (the full set of patches), "without gelu", "cpu bf16"
    without: list[str]  # patches switched off for this run
    active: list[str]  # patches active while the model ran
    outputs: list[OutputMetrics]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # report counters (GELU modules routed, ...)
    seconds: float = 0.0
    rounding: bool = False  # the CPU at the run dtype: what the dtype alone costs
    error: str | None = None  # what raised (an ablation's forward, a check, a mismatched output), one line
    note: str = ""  # how the run was made, where it matters ("without all": in a fresh interpreter or not)

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    @property
    def deterministic(self) -> bool:
        return all(o.deterministic is not False for o in self.outputs)


@dataclass
class VerifyResult:
    subject: str  # the recipe, folder, factory or model class
    patches: list[str]  # what was applied
    device: str  # where it ran: "npu", "sim" (the simulated NPU), "cuda", "cpu"
    device_asked: str  # as asked ("auto", ...)
    device_type: str  # the torch device type ("npu" for sim)
    dtype: str
    threshold: float
    model: str  # what was built or loaded
    random_init: bool
    input: str
    batch_size: int | None
    reference: str  # how the reference ran: "CPU fp32 unpatched", or under the patches and why
    runs: list[VerifyRun]
    skipped: dict[str, str]  # outputs that are not tensors (a KV cache object): name -> type
    environment: dict[str, Any]
    checks_not_run: dict[str, str] = field(default_factory=dict)  # recipe checks this model cannot take: why

    @property
    def passed(self) -> bool:
        """The verdict is the full run's; ablation and rounding runs are there for comparison."""
        return self.runs[0].passed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        for run, raw in zip(self.runs, data["runs"]):
            raw["passed"], raw["deterministic"] = run.passed, run.deterministic
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- rendering ------------------------------------------------------------------------------

    HEADER = ("output", "run", "cos sim", "max diff", "mean diff", "rel err %", "top-1", "determ.", "result")

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        # Grouped by output, runs next to each other: the seed ports' "before / after" layout.
        for key in [(o.check, o.name) for o in self.runs[0].outputs]:
            for run in self.runs:
                o = next((o for o in run.outputs if (o.check, o.name) == key), None)
                if o is None:  # checks do not run in the rounding run
                    continue
                top1 = "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f} %"
                determ = "-" if o.deterministic is None else "yes" if o.deterministic else "NO"
                rows.append((
                    f"check {o.name}" if o.check else o.name, run.label, f"{o.cosine_similarity:.8f}",
                    f"{o.max_abs_diff:.2e}", f"{o.mean_abs_diff:.2e}", f"{100 * o.mean_relative_error:.5f}", top1,
                    determ, "PASS" if o.passed else "FAIL",
                ))  # fmt: skip
        return rows

    def _header_lines(self) -> list[str]:
        where = self.device if self.device == self.device_asked else f"{self.device} (asked: {self.device_asked})"
        checks = sorted({o.check for o in self.runs[0].outputs if o.check})
        return [
            f"verify {self.subject} on {where}, {self.dtype}: {self.model}",
            f"input: {self.input}{'' if self.batch_size is None else f', batch {self.batch_size}'}",
            f"reference: {self.reference}; PASS when mean relative error <= {100 * self.threshold:g} %",
            *([f"checks: {', '.join(checks)} (two computations on the device that must agree)"] if checks else []),
            *[f"check {name} not run: {why}" for name, why in self.checks_not_run.items()],
        ]

    def _footer_lines(self) -> list[str]:
        lines = []
        full = self.runs[0]
        routed = full.stats.get("gelu", {}).get("modules_routed")
        if routed is not None:
            lines.append(f"gelu patch: {routed} GELU module(s) routed to torch_npu.npu_gelu")
        if full.error is not None:
            lines.append(f"{full.label}: raised {full.error}")
        for run in self.runs[1:]:
            if run.note:
                lines.append(f"{run.label}: {run.note}")
            if run.error is not None:
                lines.append(f"{run.label}: raised {run.error}")
            for other in run.outputs:
                with_ = next((o for o in full.outputs if (o.check, o.name) == (other.check, other.name)), None)
                if with_ is None:
                    continue
                if run.rounding:
                    lines.append(f"{run.label}: {other.name} rel err {100 * other.mean_relative_error:.5f} % from "
                                 f"rounding alone; {100 * with_.mean_relative_error:.5f} % on {self.device}")
                else:
                    lines.append(f"{run.label}: {other.name} rel err {100 * other.mean_relative_error:.5f} % -> "
                                 f"{100 * with_.mean_relative_error:.5f} % with it ({_ratio(other, with_)})")
        if self.skipped:
            lines.append("not compared (not tensors): " + ", ".join(f"{k} ({v})" for k, v in self.skipped.items()))
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"verdict: {verdict} ({full.label} with {', '.join(full.active) or 'no patches'}"
                     f"{'' if full.deterministic else '; device runs NOT deterministic'})")
        return lines

    def to_text(self) -> str:
        lines = [*self._header_lines(), "", *table(self.HEADER, self._rows(), right=range(2, 6)), ""]
        return "\n".join(lines + self._footer_lines())

    def to_markdown(self) -> str:
        lines = [f"**{line}**" if i == 0 else line for i, line in enumerate(self._header_lines())] + [""]
        lines += table(self.HEADER, self._rows(), right=range(2, 7), markdown=True)
        return "\n".join(lines + [""] + [f"- {line}" for line in self._footer_lines()])

    __str__ = to_text


def _names_off(without: Any) -> list[str]:
    """``without`` as a list of items: one string is one item ("gelu,seed"), not its letters."""
    if isinstance(without, str):
        return [without]
    try:
        items = list(without)
    except TypeError:
        items = None
    if items is None or not all(isinstance(item, str) for item in items):
        raise InputError(f"--without takes patch names, e.g. without=['gelu'] or without='gelu,seed'; got {without!r}")
    return items


def _ratio(without: OutputMetrics, with_: OutputMetrics) -> str:
    if with_.mean_relative_error == 0 or without.mean_relative_error == 0:
        if with_.mean_relative_error == without.mean_relative_error:
            return "no difference"
        return "exact with it" if with_.mean_relative_error == 0 else "exact without it"
    ratio = without.mean_relative_error / with_.mean_relative_error
    return f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger"


def _sample(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.flatten()[:SAMPLE]]


def _metrics(name: str, ref: torch.Tensor, got: torch.Tensor, threshold: float, *, top1: bool,
             deterministic: bool | None, check: str | None = None) -> OutputMetrics:
    c = compare(ref, got)
    agreement = (ref.argmax(-1) == got.argmax(-1)).float().mean().item() if top1 else None
    return OutputMetrics(
        name, c.cosine_similarity, c.max_abs_diff, c.mean_abs_diff, c.mean_relative_error, agreement,
        deterministic, c.passed(threshold), check, _sample(ref), _sample(got),
    )  # fmt: skip


def cpu_outputs(built: Built, model: torch.nn.Module, inputs: Inputs) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with torch.no_grad():
        flat = flatten_outputs(built.run(model, inputs))
    # float32 on the CPU: the comparison is done there (in float64) whatever the run dtype was.
    return {k: v.detach().float().cpu() for k, v in flat.tensors.items()}, flat.skipped


Pairs = list[tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]]  # (check, expected, actual)


def _cpu_run(subject: Subject, built: Built, example: Inputs, dtype: torch.dtype,
             dtype_name: str) -> tuple[tuple[dict[str, torch.Tensor], dict[str, str]], str, bool]:
    """The model on the CPU, unpatched; code that cannot run there unpatched (``device="cuda"`` in a
    forward) runs under the subject's patches targeting the CPU. Returns (outputs, how it ran, patched)."""
    model, inputs = built.prepare(built.model, "cpu", dtype), example.to("cpu", dtype)
    try:
        return cpu_outputs(built, model, inputs), f"CPU {dtype_name} unpatched", False
    except Exception as exc:  # noqa: BLE001 - reported in the description, and raised if patching fails too
        reason = one_line(exc)
    with ascend_patch.patched(*subject.patches, device="cpu", **subject.options):
        outs = cpu_outputs(built, model, inputs)
    logger.info("verify %s: does not run unpatched on the CPU (%s); the reference runs under the patches there",
                subject.name, reason)
    return outs, f"CPU {dtype_name} under the patches (unpatched it raised {reason})", True


def checks_for(subject: Subject, model: torch.nn.Module) -> tuple[list[Check], dict[str, str]]:
    """The recipe's checks this model can take, and why the others cannot."""
    checks, not_run = [], {}
    for check in subject.checks:
        if check.applies is None or check.applies(model):
            checks.append(check)
        else:
            not_run[check.name] = f"{type(model).__name__} is not a model it applies to ({check.summary})"
    return checks, not_run


def run_checks(checks: Sequence[Check], model: torch.nn.Module, inputs: Inputs) -> tuple[Pairs, list[str]]:
    """(check, expected, actual) per check that ran, and one line per check that raised."""
    pairs, errors = [], []
    for check in checks:
        try:
            expected, actual = check.run(model, inputs)
        except Exception as exc:  # noqa: BLE001 - a check that crashes on the device fails the run, and says why
            errors.append(f"{one_line(exc)} (in check {check.name})")
            continue
        pairs.append((check.name, {k: v.detach().float().cpu() for k, v in expected.items()},
                      {k: v.detach().float().cpu() for k, v in actual.items()}))
    return pairs, errors


def _check_rows(pairs: Pairs, threshold: float) -> list[OutputMetrics]:
    return [_metrics(key, ref, actual[key], threshold, top1=False, deterministic=None, check=check)
            for check, expected, actual in pairs for key, ref in expected.items()]


def _device_run(subject: Subject, built: Built, checks: Sequence[Check], model: torch.nn.Module, inputs: Inputs,
                device: str, off: Sequence[str]) -> tuple[list[dict[str, torch.Tensor]], Pairs, list[str], list[str],
                                                          dict]:
    """Two forward runs under the subject's patches minus ``off`` (the second one only for the determinism
    check), then the checks: (outputs, check pairs, check errors, active patches, report counters)."""
    names, options, revert = subject.plan(off)
    if not names:  # nothing applied (in this process: see tools/unpatched.py)
        firsts = [cpu_outputs(built, model, inputs)[0] for _ in range(2)]
        return firsts, *run_checks(checks, model, inputs), [], {}
    with ascend_patch.patched(*names, device=device, **options) as switched_on:
        # Only what this block switched on is ours to switch off; a patch the caller applied
        # before verify stays as it is.
        ablate = [n for n in revert if n in switched_on]
        for name in revert:
            if name not in switched_on and ascend_patch.engine.is_active(name):
                logger.warning("verify: %s was already active before verify; it stays on", name)
        if ablate:
            ascend_patch.revert(*ablate)
        ascend_patch.report(clear=True)
        outs = [cpu_outputs(built, model, inputs)[0] for _ in range(2)]
        stats = ascend_patch.report().stats
        return outs, *run_checks(checks, model, inputs), ascend_patch.active(), stats


def verify(
    target: Any = None,
    inputs: Any = None,
    *,
    factory: str | Callable[[], Any] | None = None,
    recipe: str | None = None,
    patches: Sequence[str] | None = None,
    model_path: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    without: Sequence[str] = (),
    threshold: float = 0.01,
    tiny: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
    repo: str | os.PathLike[str] | None = None,
    random_init: bool = False,
    trust_remote_code: bool = False,
    run: Callable[[torch.nn.Module, Inputs], Any] | None = None,
    classifier_outputs: Sequence[str] = ("logits",),
) -> VerifyResult:
    """Compare a model patched on ``device`` with a CPU fp32 reference.

    ``target``: a recipe with a built-in model ("dinov2"), a Hugging Face model folder or cached hub
    id, a factory ("pkg.module:build", "file.py:build" or a function) returning ``(model, inputs)``,
    or a ``torch.nn.Module`` with its example ``inputs``. ``recipe`` / ``patches``: what a non-recipe
    target runs under (default: ``apply()``'s default set). ``device``: "auto" (None), "npu",
    "cuda", "cpu" or "sim" (the simulated NPU). ``without``: extra runs with these patches off
    ("gelu", "gelu,seed", or "all"). ``batch_size``: None runs the example as given (batch 1 for a
    recipe or a folder). ``run(model, inputs)``: the forward under test, when calling the model is
    not it. Raises :class:`~ascend_patch.tools.models.InputError` on bad input.

    A given model is moved to the device and dtype in place (as ``model.to`` does); pass a copy to
    keep it on the CPU.
    """
    torch_dtype = parse_dtype(dtype)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < math.inf:
        raise InputError(f"--threshold must be a finite number > 0 (0.01 = 1 %), got {threshold!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):  # found now, not by torch.manual_seed mid-run
        raise InputError(f"--seed must be an integer, got {seed!r}")
    without = _names_off(without)
    subject = resolve(target, inputs, factory=factory, recipe=recipe, patches=patches, dtype=dtype,
                      model_path=model_path, tiny=tiny, repo=repo, image=image, seed=seed, random_init=random_init,
                      trust_remote_code=trust_remote_code, run=run, classifier_outputs=classifier_outputs)
    ablations = subject.ablations(without)
    asked, kind = resolve_device(device)

    # Built under the patches, as a user's script builds it: some recipes repair what from_pretrained
    # leaves behind (VTP's text mask, AIMv2's random head), a factory may call .cuda(). The
    # reference then runs unpatched.
    started = time.perf_counter()
    with ascend_patch.patched(*subject.patches, device=asked, **subject.options):
        built = subject.build()
    example = built.inputs(batch_size)
    phases.info("verify %s: built %s in %.1f s", subject.name, built.source, time.perf_counter() - started)
    # A checkpoint saved in bf16 loads as bf16 on transformers 5: the reference is fp32.
    started = time.perf_counter()
    (reference, skipped), reference_desc, _ = _cpu_run(subject, built, example, torch.float32, "fp32")
    phases.info("verify %s: reference (%s) in %.1f s", subject.name, reference_desc, time.perf_counter() - started)
    top1 = set(built.classifier_outputs)
    checks, checks_not_run = checks_for(subject, built.model)

    def compared(label: str, outs: list[dict[str, torch.Tensor]]) -> list[OutputMetrics]:
        missing = set(reference) - set(outs[0])
        if missing:
            raise RuntimeError(f"verify {subject.name}: run {label!r} returned no {', '.join(sorted(missing))}")
        return [_metrics(name, ref, outs[0][name], threshold, top1=name in top1,
                         deterministic=torch.equal(outs[0][name], outs[-1][name]) if len(outs) > 1 else None)
                for name, ref in reference.items()]

    rounding = None
    if torch_dtype != torch.float32:  # the same dtype on the CPU, unpatched: what rounding alone costs
        started = time.perf_counter()
        (outs, _), how, patched = _cpu_run(subject, built, example, torch_dtype, dtype)
        rounding = VerifyRun(f"cpu {dtype}", [], list(subject.patches) if patched else [],
                             compared("cpu " + dtype, [outs]), {}, time.perf_counter() - started, rounding=True,
                             note=how if patched else "")

    fresh = [ALL] in ablations and subject.request is not None
    # The weights as the reference used them, for the fresh interpreter of "without all".
    state = {k: v.detach().clone() for k, v in built.model.state_dict().items()} if fresh else {}
    model = built.prepare(built.model, kind, torch_dtype)
    device_inputs = example.to(kind, torch_dtype)
    runs = []
    for off in [[], *ablations]:
        started = time.perf_counter()
        label = subject.name if not off else "without " + ("all patches" if ALL in off else "+".join(off))
        note = ""
        try:
            if off == [ALL] and fresh:
                note = "a fresh interpreter: the model code imported with no patch"
                got = run_fresh(dict(subject.request), asked, torch_dtype, state, example)
                if "error" in got:
                    runs.append(VerifyRun(label, off, [], [], error=got["error"], note=note))
                    continue
                outs, pairs, check_errors, active, stats = got["outputs"], got["checks"], got["check_errors"], [], {}
            else:
                outs, pairs, check_errors, active, stats = _device_run(subject, built, checks, model, device_inputs,
                                                                       asked, off)
                if off == [ALL]:
                    note = "in this process: what the model code decided at import under the patches stays"
        except Exception as exc:
            if not off:
                raise
            # What the model does without a patch is the answer, even when the answer is a crash.
            runs.append(VerifyRun(label, off, [], [], error=one_line(exc)))
            continue
        try:
            rows, error = compared(label, outs) + _check_rows(pairs, threshold), "; ".join(check_errors) or None
        except Exception as exc:  # noqa: BLE001 - outputs that do not match the reference's names or shapes
            rows, error = [], one_line(exc)
        runs.append(VerifyRun(label, off, active, rows, stats, time.perf_counter() - started, error=error,
                              note=note))
        phases.info("verify %s: run %r on %s in %.1f s", subject.name, label, asked, runs[-1].seconds)
    if rounding is not None:
        runs.append(rounding)

    env = environment(kind)
    return VerifyResult(
        subject=subject.name, patches=list(subject.patches), device=env.device, device_asked=asked, device_type=kind,
        dtype=dtype, threshold=threshold, model=built.source, random_init=built.random_init, input=built.input_desc,
        batch_size=example.batch_size, reference=reference_desc, runs=runs, skipped=skipped, environment=env.to_dict(),
        checks_not_run=checks_not_run,
    )  # fmt: skip
