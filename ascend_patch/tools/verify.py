"""Accuracy check of a recipe: CPU fp32 reference vs the patched model on the device.

Every NPU port we studied wrote this script by hand: run the model on the CPU in fp32, run it on
the NPU, and compare per output (cosine similarity, max/mean abs diff, mean relative error, top-1
agreement for classifiers) plus a determinism check (two device runs bit-identical). ``without``
adds runs with a patch of the recipe switched off, so the table shows what that patch buys.

    result = verify("dinov2", device="sim", without=["gelu"], tiny=True)
    print(result.to_text()); result.passed
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import ascend_patch

from .compare import compare
from .models import InputError, get_spec, parse_dtype, resolve_device

logger = logging.getLogger("ascend_patch")

ALL = "all"  # ``without=["all"]``: a run with none of the recipe's patches


@dataclass
class OutputMetrics:
    name: str
    cosine_similarity: float
    max_abs_diff: float
    mean_abs_diff: float
    mean_relative_error: float  # mean|ref - dev| / mean|ref|
    top1_agreement: float | None  # fraction of samples with the same argmax (classifier outputs only)
    deterministic: bool  # two device runs gave bit-identical values
    passed: bool  # mean_relative_error <= threshold


@dataclass
class VerifyRun:
    label: str  # "dinov2" (the full recipe) or "without gelu"
    without: list[str]  # patches of the recipe switched off for this run
    active: list[str]  # patches active while the model ran
    outputs: list[OutputMetrics]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # report counters (GELU modules routed, ...)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def deterministic(self) -> bool:
        return all(o.deterministic for o in self.outputs)


@dataclass
class VerifyResult:
    recipe: str
    device: str  # as asked ("sim", "npu", "auto", ...)
    device_type: str  # where the tensors ran ("npu" for sim)
    dtype: str
    threshold: float
    model: str  # what was built or loaded
    random_init: bool
    input: str
    batch_size: int
    runs: list[VerifyRun]

    @property
    def passed(self) -> bool:
        """The verdict is the full recipe's run; ablation runs are there for comparison."""
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

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        names = [o.name for o in self.runs[0].outputs]
        # Grouped by output, runs next to each other: the seed ports' "before / after" layout.
        for index, name in enumerate(names):
            for run in self.runs:
                o = run.outputs[index]
                top1 = "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f} %"
                rows.append((
                    name, run.label, f"{o.cosine_similarity:.8f}", f"{o.max_abs_diff:.2e}", f"{o.mean_abs_diff:.2e}",
                    f"{100 * o.mean_relative_error:.5f}", top1, "yes" if o.deterministic else "NO",
                    "PASS" if o.passed else "FAIL",
                ))  # fmt: skip
        return rows

    HEADER = ("output", "run", "cos sim", "max diff", "mean diff", "rel err %", "top-1", "determ.", "result")

    def _header_lines(self) -> list[str]:
        where = self.device if self.device == self.device_type else f"{self.device} ({self.device_type})"
        return [
            f"verify {self.recipe} on {where}, {self.dtype}: {self.model}",
            (f"input: {self.input}, batch {self.batch_size}; reference: CPU fp32 unpatched; "
             f"PASS when mean relative error <= {100 * self.threshold:g} %"),
        ]

    def _footer_lines(self) -> list[str]:
        lines = []
        full = self.runs[0]
        routed = full.stats.get("gelu", {}).get("modules_routed")
        if routed is not None:
            lines.append(f"gelu patch: {routed} GELU module(s) routed to torch_npu.npu_gelu")
        for run in self.runs[1:]:
            for with_, without in zip(full.outputs, run.outputs):
                lines.append(
                    f"{run.label}: {with_.name} rel err {100 * without.mean_relative_error:.5f} % -> "
                    f"{100 * with_.mean_relative_error:.5f} % with it ({_ratio(without, with_)})"
                )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"verdict: {verdict} ({full.label} with {', '.join(full.active) or 'no patches'}"
                     f"{'' if full.deterministic else '; device runs NOT deterministic'})")
        return lines

    def to_text(self) -> str:
        rows = [self.HEADER, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        numeric = set(range(2, 6))
        lines = self._header_lines() + [""]
        for n, row in enumerate(rows):
            cells = [c.rjust(w) if i in numeric and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines + [""] + self._footer_lines())

    def to_markdown(self) -> str:
        lines = [f"**{line}**" if i == 0 else line for i, line in enumerate(self._header_lines())] + [""]
        lines.append("| " + " | ".join(self.HEADER) + " |")
        lines.append("|" + "|".join("---:" if 2 <= i <= 6 else "---" for i in range(len(self.HEADER))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        return "\n".join(lines + [""] + [f"- {line}" for line in self._footer_lines()])

    __str__ = to_text


def _ratio(without: OutputMetrics, with_: OutputMetrics) -> str:
    if with_.mean_relative_error == 0:
        return "exact with it" if without.mean_relative_error else "no difference"
    ratio = without.mean_relative_error / with_.mean_relative_error
    return f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger"


def _ablations(recipe: str, without: Iterable[str]) -> list[list[str]]:
    """Each ``without`` item is one extra run; "gelu,seed" switches both off in the same run."""
    from ..recipes import get_recipe

    members = list(get_recipe(recipe).patches)
    runs: list[list[str]] = []
    for item in without:
        names = [n.strip() for n in str(item).split(",") if n.strip()]
        if names == [ALL]:
            runs.append(list(members) + [recipe])
            continue
        for name in names:
            if name not in members:
                raise InputError(
                    f"--without {name!r}: not a patch of recipe {recipe!r} (its patches: {', '.join(members)}; "
                    f"or '{ALL}')"
                )
        if names:
            runs.append(names)
    return runs


def _run_outputs(spec: Any, model: torch.nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = spec.run(model, pixels)
    # float32 on the CPU: the comparison is done there (in float64) whatever the run dtype was.
    return {k: v.detach().float().cpu() for k, v in outputs.items()}


def _device_run(recipe: str, spec: Any, model: torch.nn.Module, pixels: torch.Tensor, device: str,
                off: Sequence[str], options: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                                      list[str], dict]:
    """Two runs under the recipe minus ``off``: the second one is only for the determinism check."""
    if recipe in off:  # "all": nothing applied
        first = _run_outputs(spec, model, pixels)
        return first, _run_outputs(spec, model, pixels), [], {}
    with ascend_patch.patched(recipe, device=device, **options) as switched_on:
        # Only what this block switched on is ours to switch off; a patch the caller applied
        # before verify stays as it is.
        ablate = [n for n in off if n in switched_on]
        for name in off:
            if name not in switched_on and ascend_patch.engine.is_active(name):
                logger.warning("ascend_patch verify: %s was already active before verify; it stays on", name)
        if ablate:
            ascend_patch.revert(*ablate)
        ascend_patch.report(clear=True)
        first = _run_outputs(spec, model, pixels)
        second = _run_outputs(spec, model, pixels)
        report = ascend_patch.report()
        return first, second, ascend_patch.active(), report.stats


def verify(
    recipe: str,
    *,
    model_path: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    without: Sequence[str] = (),
    threshold: float = 0.01,
    tiny: bool = False,
    batch_size: int = 1,
    seed: int = 0,
    repo: str | os.PathLike[str] | None = None,
) -> VerifyResult:
    """Compare ``recipe``'s model patched on ``device`` with a CPU fp32 reference.

    ``device``: "auto" (None), "npu", "cuda", "cpu" or "sim" (the simulated NPU). ``without``:
    extra runs with these patches of the recipe off ("gelu", "gelu,seed", or "all"). ``repo``: a
    clone of the upstream repository, for models that are not pip-installable (MingTok, VTP).
    Raises :class:`~ascend_patch.tools.models.InputError` on bad input.
    """
    spec = get_spec(recipe)
    torch_dtype = parse_dtype(dtype)
    if not threshold > 0:
        raise InputError(f"--threshold must be > 0, got {threshold}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    ablations = _ablations(recipe, without)
    spec.check_image(image)
    asked, kind = resolve_device(device)

    options = spec.options_for(dtype)
    # Loaded under the recipe, as a user's script would: some recipes repair what from_pretrained
    # leaves behind (VTP's text mask, AIMv2's random head). The reference then runs unpatched.
    with ascend_patch.patched(recipe, device=asked, **options):
        loaded = spec.build(model_path, tiny=tiny, repo=repo)
    pixels = spec.inputs(loaded.image_size, batch_size, image=image, seed=seed)
    # A checkpoint saved in bf16 loads as bf16 on transformers 5: the reference is fp32.
    reference = _run_outputs(spec, spec.prepare(loaded.model, "cpu", torch.float32), pixels)  # no patch active
    model = spec.prepare(loaded.model, kind, torch_dtype)
    pixels_dev = pixels.to(device=kind, dtype=torch_dtype)

    runs = []
    for off in [[], *ablations]:
        started = time.perf_counter()
        first, second, active, stats = _device_run(recipe, spec, model, pixels_dev, asked, off, options)
        label = recipe if not off else "without " + ("all patches" if recipe in off else "+".join(off))
        outputs = []
        for name, ref in reference.items():
            c = compare(ref, first[name])
            top1 = None
            if name in spec.classifier_outputs:
                top1 = (ref.argmax(-1) == first[name].argmax(-1)).float().mean().item()
            outputs.append(OutputMetrics(
                name, c.cosine_similarity, c.max_abs_diff, c.mean_abs_diff, c.mean_relative_error, top1,
                deterministic=torch.equal(first[name], second[name]), passed=c.passed(threshold),
            ))  # fmt: skip
        runs.append(VerifyRun(label, [n for n in off if n != recipe], active, outputs, stats,
                              time.perf_counter() - started))
        logger.info("verify %s: run %r done in %.1f s", recipe, label, runs[-1].seconds)

    return VerifyResult(
        recipe=recipe, device=asked, device_type=kind, dtype=dtype, threshold=threshold, model=loaded.source,
        random_init=loaded.random_init, input=str(image) if image else f"seeded random tensor (seed {seed})",
        batch_size=batch_size, runs=runs,
    )  # fmt: skip
