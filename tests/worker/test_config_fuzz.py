"""Anything ``validate_config`` accepts gets through the worker's own conversion to training
arguments: TRL's ``SFTConfig`` (Hugging Face's ``__post_init__`` checks), the seed, the
optimizer and the LR schedule, built the way the Trainer builds them (no model, no training).

A property test: hypothesis draws raw configs around every bound (0, negatives, huge values,
inf, NaN, unknown names); the ones ``validate_config`` refuses are skipped, the rest must build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arkor_ops.config import LR_SCHEDULERS, OPTIMIZERS, validate_config
from arkor_ops.errors import ConfigError
from arkor_ops.worker.data import PreparedDataset
from arkor_ops.worker.train import sft_config

_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 0.5, 0.999999, 1.0, 2.0, 1e300]),
)
_ints = st.one_of(
    st.integers(min_value=-3, max_value=20),
    st.sampled_from([2**31, 2**32 - 1, 2**32, 2**63, -(2**63), 10**9, 10**12]),
)
_numbers = st.one_of(_ints, _floats)
_steps = st.one_of(
    st.none(),
    _numbers,
    st.builds(lambda n: {"steps": n}, _numbers),
    st.builds(lambda r: {"ratio": r}, _floats),
)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


_config = st.fixed_dictionaries(
    {
        "name": st.just("fuzz"),
        "model": st.just("m"),
        "dataset": st.just({"type": "file", "path": "x"}),
    },
    optional={
        "maxSteps": _ints,
        "numTrainEpochs": _numbers,
        "learningRate": _floats,
        "batchSize": _ints,
        "gradientAccumulationSteps": _ints,
        "weightDecay": _floats,
        "seed": _ints,
        "dryRun": st.booleans(),
        "warmupSteps": _steps,
        "loggingSteps": _steps,
        "saveSteps": _steps,
        "evalSteps": _steps,
        "trainOnResponsesOnly": _opt(st.booleans()),
        "optim": _opt(st.sampled_from([*OPTIMIZERS, "adamw", "adamw_torch_xla", "galore_adamw"])),
        "lrSchedulerType": _opt(st.sampled_from([*LR_SCHEDULERS, "cosine_with_min_lr", "x"])),
        "datasetFormat": st.sampled_from(["chatml", "alpaca", "text"]),
        "datasetSplit": _opt(
            st.fixed_dictionaries(
                {"enabled": st.booleans()}, optional={"testSize": _floats, "seed": _ints}
            )
        ),
        "lora": _opt(
            st.fixed_dictionaries(
                {"r": _ints, "alpha": _ints},
                optional={"maxLength": _ints, "dropout": _floats, "loadIn4bit": st.booleans()},
            )
        ),
    },
)


def _build(raw: dict[str, Any], output_dir: Path) -> None:
    """What the worker does with an accepted config before training starts."""
    config = validate_config(raw)
    fmt = config.dataset_format.type if config.dataset_format else "chatml"
    data = PreparedDataset(examples=[], fingerprint="f", rows=100, source="fuzz", format=fmt)
    args = sft_config("trl", config, data, output_dir, cuda=False, eos=None)
    transformers.set_seed(args.seed)  # the Trainer's __init__ does this
    model = torch.nn.Linear(4, 4)
    cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)  # type: ignore[arg-type]
    optimizer = cls(model.parameters(), **kwargs)
    total = args.max_steps if args.max_steps > 0 else 50
    transformers.get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(total),
        num_training_steps=total,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=_config)
def test_every_accepted_config_builds_its_training_arguments(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    try:
        validate_config(raw)
    except ConfigError:
        assume(False)
    _build(raw, tmp_path / "out")


def test_the_config_names_match_the_installed_transformers() -> None:
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}
