"""The service benchmark's baseline reads with the models the service it measures reads with."""

from evaluation.bench_service import baseline_reader
from models.inference import available_providers
from models.model_card import ModelKey, get_model_card


def test_the_baseline_follows_the_benchmarks_model_overrides():
    findings = get_model_card(ModelKey.FINDINGS)
    as_served = dict(baseline_reader(()).model_versions())
    on_a_cpu = available_providers() == ["CPUExecutionProvider"]
    assert as_served["findings"] == findings.version + ("+int8" if on_a_cpu else "")
    in_float = dict(baseline_reader(("models.precision=fp32",)).model_versions())
    assert in_float["findings"] == findings.version
    assert set(in_float) == set(as_served) == {"tooth-numbering", "findings", "root-count", "finding-verifier"}
