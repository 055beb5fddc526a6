"""check_scoring: the one beta / norm / reference check of score, rerank and rewardbench."""

from __future__ import annotations

import math

import pytest

from dpo_eval.errors import UserError
from dpo_eval.model_settings import ModelSettings
from dpo_eval.rerank import RerankConfig
from dpo_eval.rewardbench.run import RewardBenchConfig
from dpo_eval.score import ScoreConfig
from dpo_eval.scoring_checks import PAIR_NORMS, SEQUENCE_NORMS, check_scoring


@pytest.mark.parametrize("beta,norm,is_reference_free", [
    (0.1, "sum", False), (0.1, "avg", False), (2.0, "sum", True), (2.0, "avg", True), (1e-9, "norm", True),
])
def test_valid_settings_pass(beta, norm, is_reference_free):
    assert check_scoring(beta, norm, is_reference_free) is None


@pytest.mark.parametrize("beta,norm,is_reference_free,norms,needles", [
    (0.0, "sum", False, SEQUENCE_NORMS, ("--beta", "positive", "got 0.0", "--beta 0.1")),
    (-1.0, "avg", True, SEQUENCE_NORMS, ("--beta", "positive", "got -1.0")),
    (math.nan, "sum", False, SEQUENCE_NORMS, ("--beta", "positive", "got nan")),
    (0.1, "mean", False, SEQUENCE_NORMS, ("--norm", "sum, avg, norm", "'mean'")),
    (0.1, "norm", True, PAIR_NORMS, ("--norm", "sum, avg", "'norm'")),  # score has no "norm", even reference-free
    (0.1, "norm", False, SEQUENCE_NORMS, ("--norm norm", "reference-free", "--ref none", "--norm sum or avg")),
])
def test_each_failure_is_one_line_naming_the_flag_and_fix(beta, norm, is_reference_free, norms, needles):
    with pytest.raises(UserError) as caught:
        check_scoring(beta, norm, is_reference_free, norms=norms)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_beta_is_checked_before_norm():
    with pytest.raises(UserError, match="--beta"):
        check_scoring(0.0, "norm", False)


@pytest.mark.parametrize("make", [
    lambda ref, **kw: ScoreConfig(policy="p", data="d", models=ModelSettings(ref=ref), **kw),
    lambda ref, **kw: RerankConfig(policy="p", candidates="c", models=ModelSettings(ref=ref), **kw),
    lambda ref, **kw: RewardBenchConfig(policy="p", data="d", models=ModelSettings(ref=ref), **kw),
])
def test_every_scoring_command_uses_it(make):
    """Each config's validate raises check_scoring's own messages (no file or model is touched)."""
    for kwargs, needle in [({"ref": "r", "beta": 0.0}, "--beta 0.1"), ({"ref": "r", "norm": "mean"}, "--norm must")]:
        with pytest.raises(UserError, match=needle):
            make(**kwargs).validate()
    make(ref="none", norm="avg").validate()


def test_only_rerank_and_rewardbench_take_norm_norm():
    with pytest.raises(UserError, match="must be one of sum, avg"):
        ScoreConfig(policy="p", data="d", models=ModelSettings(ref="none"), norm="norm").validate()
    RerankConfig(policy="p", candidates="c", models=ModelSettings(ref="none"), norm="norm").validate()
    RewardBenchConfig(policy="p", data="d", models=ModelSettings(ref="none"), norm="norm").validate()
    for config in (RerankConfig(policy="p", candidates="c", models=ModelSettings(ref="r"), norm="norm"),
                   RewardBenchConfig(policy="p", data="d", models=ModelSettings(ref="r"), norm="norm")):
        with pytest.raises(UserError, match="add --ref none"):
            config.validate()
